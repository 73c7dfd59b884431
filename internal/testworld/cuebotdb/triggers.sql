-- Triggers of the Cuebot-compatible test schema, exactly as catalog/triggers.tsv lists them
-- (two IN lists are written as source, which PostgreSQL deparses to the catalog's text).

CREATE TRIGGER after_insert_folder AFTER INSERT ON public.folder
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__after_insert_folder();

CREATE TRIGGER before_delete_folder BEFORE DELETE ON public.folder
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__before_delete_folder();

CREATE TRIGGER before_insert_folder BEFORE INSERT ON public.folder
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__before_insert_folder();

CREATE TRIGGER tier_folder BEFORE UPDATE ON public.folder_resource
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__tier_folder();

CREATE TRIGGER frame_history_open AFTER UPDATE ON public.frame
    FOR EACH ROW
    WHEN ((new.str_state)::text <> (old.str_state)::text)
    EXECUTE FUNCTION public.trigger__frame_history_open();

CREATE TRIGGER set_frame_ts_eligible_on_insert BEFORE INSERT ON public.frame
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__set_frame_ts_eligible_on_insert();

CREATE TRIGGER set_frame_ts_eligible_setup_to_wait BEFORE UPDATE ON public.frame
    FOR EACH ROW
    WHEN (((old.str_state)::text = 'SETUP'::text) AND ((new.str_state)::text = 'WAITING'::text))
    EXECUTE FUNCTION public.trigger__set_frame_ts_eligible_setup_to_wait();

CREATE TRIGGER update_frame_checkpoint_state BEFORE UPDATE ON public.frame
    FOR EACH ROW
    WHEN (((new.str_state)::text = 'WAITING'::text) AND ((old.str_state)::text = 'RUNNING'::text) AND (new.str_checkpoint_state IN ('ENABLED', 'COPYING')))
    EXECUTE FUNCTION public.trigger__update_frame_checkpoint_state();

CREATE TRIGGER update_frame_dep_to_wait BEFORE UPDATE ON public.frame
    FOR EACH ROW
    WHEN ((old.int_depend_count > 0) AND (new.int_depend_count < 1) AND ((old.str_state)::text = 'DEPEND'::text))
    EXECUTE FUNCTION public.trigger__update_frame_dep_to_wait();

CREATE TRIGGER update_frame_eaten BEFORE UPDATE ON public.frame
    FOR EACH ROW
    WHEN (((new.str_state)::text = 'EATEN'::text) AND ((old.str_state)::text = 'SUCCEEDED'::text))
    EXECUTE FUNCTION public.trigger__update_frame_eaten();

CREATE TRIGGER update_frame_status_counts AFTER UPDATE ON public.frame
    FOR EACH ROW
    WHEN (((old.str_state)::text <> 'SETUP'::text) AND ((old.str_state)::text <> (new.str_state)::text))
    EXECUTE FUNCTION public.trigger__update_frame_status_counts();

CREATE TRIGGER update_frame_wait_to_dep BEFORE UPDATE ON public.frame
    FOR EACH ROW
    WHEN ((new.int_depend_count > 0) AND (new.str_state IN ('DEAD', 'SUCCEEDED', 'WAITING', 'CHECKPOINT')))
    EXECUTE FUNCTION public.trigger__update_frame_wait_to_dep();

CREATE TRIGGER tbiu_frame_history BEFORE UPDATE OR INSERT ON public.frame_history
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__tbiu_frame_history();

CREATE TRIGGER before_delete_host BEFORE DELETE ON public.host
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__before_delete_host();

CREATE TRIGGER verify_host_resources BEFORE UPDATE ON public.host
    FOR EACH ROW
    WHEN ((new.int_cores_idle <> old.int_cores_idle) OR (new.int_mem_idle <> old.int_mem_idle) OR (new.int_gpus_idle <> old.int_gpus_idle) OR (new.int_gpu_mem_idle <> old.int_gpu_mem_idle))
    EXECUTE FUNCTION public.trigger__verify_host_resources();

CREATE TRIGGER after_insert_job AFTER INSERT ON public.job
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__after_insert_job();

CREATE TRIGGER after_job_dept_update AFTER UPDATE ON public.job
    FOR EACH ROW
    WHEN (((new.pk_dept)::text <> (old.pk_dept)::text) AND ((new.str_state)::text = 'PENDING'::text))
    EXECUTE FUNCTION public.trigger__after_job_dept_update();

CREATE TRIGGER after_job_finished AFTER UPDATE ON public.job
    FOR EACH ROW
    WHEN (((old.str_state)::text = 'PENDING'::text) AND ((new.str_state)::text = 'FINISHED'::text))
    EXECUTE FUNCTION public.trigger__after_job_finished();

CREATE TRIGGER after_job_moved AFTER UPDATE ON public.job
    FOR EACH ROW
    WHEN ((new.pk_folder)::text <> (old.pk_folder)::text)
    EXECUTE FUNCTION public.trigger__after_job_moved();

CREATE TRIGGER before_delete_job BEFORE DELETE ON public.job
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__before_delete_job();

CREATE TRIGGER tbiu_job_history BEFORE INSERT OR UPDATE ON public.job_history
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__tbiu_job_history();

CREATE TRIGGER tier_job BEFORE UPDATE ON public.job_resource
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__tier_job();

CREATE TRIGGER verify_job_resources BEFORE UPDATE ON public.job_resource
    FOR EACH ROW
    WHEN (((new.int_max_cores = old.int_max_cores) AND (new.int_cores > old.int_cores)) OR ((new.int_max_gpus = old.int_max_gpus) AND (new.int_gpus > old.int_gpus)))
    EXECUTE FUNCTION public.trigger__verify_job_resources();

CREATE TRIGGER after_insert_layer AFTER INSERT ON public.layer
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__after_insert_layer();

CREATE TRIGGER before_delete_layer BEFORE DELETE ON public.layer
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__before_delete_layer();

CREATE TRIGGER before_delete_layer_drop_limit BEFORE DELETE ON public.layer
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__before_delete_layer_drop_limit();

CREATE TRIGGER tbiu_layer_history BEFORE INSERT OR UPDATE ON public.layer_history
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__tbiu_layer_history();

CREATE TRIGGER point_tier BEFORE UPDATE ON public.point
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__point_tier();

CREATE TRIGGER before_insert_proc BEFORE INSERT ON public.proc
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__before_insert_proc();

CREATE TRIGGER update_proc_update_layer AFTER UPDATE ON public.proc
    FOR EACH ROW
    WHEN ((new.pk_layer)::text <> (old.pk_layer)::text)
    EXECUTE FUNCTION public.trigger__update_proc_update_layer();

CREATE TRIGGER upgrade_proc_memory_usage AFTER UPDATE ON public.proc
    FOR EACH ROW
    WHEN (new.int_mem_reserved <> old.int_mem_reserved)
    EXECUTE FUNCTION public.trigger__upgrade_proc_memory_usage();

CREATE TRIGGER tier_subscription BEFORE UPDATE ON public.subscription
    FOR EACH ROW
    EXECUTE FUNCTION public.trigger__tier_subscription();

CREATE TRIGGER verify_subscription BEFORE UPDATE ON public.subscription
    FOR EACH ROW
    WHEN ((new.int_burst = old.int_burst) AND (new.int_cores > old.int_cores))
    EXECUTE FUNCTION public.trigger__verify_subscription();
