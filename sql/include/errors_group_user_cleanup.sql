-- Included by sql/100_errors.sql and by the 0.11.0 -> 0.12.0 upgrade, which made it.
-- error_group_user has no foreign key to tb_error_log (see its table): these triggers do what
-- ON DELETE CASCADE did. They run as the owner, like the captures that write the users.

CREATE OR REPLACE FUNCTION monitoring._forget_deleted_group_users()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM monitoring.error_group_user u
    USING deleted_groups d
    WHERE u.error_id OPERATOR(pg_catalog.=) d.error_id;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._forget_deleted_group_users() IS
    'Trigger: deletes the users of the error groups a statement deleted';

CREATE OR REPLACE FUNCTION monitoring._forget_all_group_users()
    RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    TRUNCATE monitoring.error_group_user;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION monitoring._forget_all_group_users() IS
    'Trigger: empties error_group_user when tb_error_log is truncated';

CREATE TRIGGER tb_error_log_forget_users
    AFTER DELETE ON monitoring.tb_error_log
    REFERENCING OLD TABLE AS deleted_groups
    FOR EACH STATEMENT EXECUTE FUNCTION monitoring._forget_deleted_group_users();
CREATE TRIGGER tb_error_log_forget_all_users
    AFTER TRUNCATE ON monitoring.tb_error_log
    FOR EACH STATEMENT EXECUTE FUNCTION monitoring._forget_all_group_users();
