DELETE FROM cuesched.migration WHERE version = 12;
DROP TRIGGER cuesched_limit_change ON public.show;
DROP TRIGGER cuesched_limit_change ON public.host;
DROP TRIGGER cuesched_limit_change ON public.limit_record;
DROP TRIGGER cuesched_limit_change ON public.folder_resource;
DROP TRIGGER cuesched_limit_change ON public.job_resource;
DROP TRIGGER cuesched_limit_change ON public.subscription;
DROP FUNCTION cuesched.limit_changed();
DROP TABLE cuesched.limit_change;
