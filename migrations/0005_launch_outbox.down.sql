DROP TRIGGER cuesched_forget_launch ON public.proc;
DROP FUNCTION cuesched.forget_launch();
DROP TABLE cuesched.launch_outbox;
