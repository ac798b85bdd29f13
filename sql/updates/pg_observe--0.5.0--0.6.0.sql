-- 0.5.0 -> 0.6.0: operations (health checks, database-health views, Prometheus exposition,
-- dashboard functions) and the cache (UNLOGGED tables with TTL). New objects come from the
-- same files as a fresh install; make test compares an upgraded database with a fresh one.

-- pg_dump keeps the identity sequences' values: restored ids are not handed out again (one
-- call a statement: each rewrites the extension's row).
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_activity_activity_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.error_fingerprint_rule_rule_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.notification_queue_queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.rejected_telemetry_rejected_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.metrics_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('monitoring.tb_entity_change_log_change_id_seq', '');

-- The audit dashboards read recent changes of every entity.
CREATE INDEX tb_entity_change_log_changed_at_brin ON monitoring.tb_entity_change_log USING brin (changed_at);

-- @include sql/400_operations.sql
-- @include sql/410_prometheus.sql
-- @include sql/420_dashboards.sql
-- @include sql/500_cache.sql
-- The dispatcher leaves a heartbeat for health().
-- @include sql/include/notify_delivery.sql

-- @include sql/900_privileges.sql
-- @include sql/910_privileges_errors.sql
-- @include sql/920_privileges_notifications.sql
-- @include sql/930_privileges_telemetry.sql
-- @include sql/940_privileges_operations.sql
-- @include sql/941_privileges_prometheus.sql
-- @include sql/942_privileges_dashboards.sql
-- @include sql/950_privileges_cache.sql
-- @include sql/990_reset_search_path.sql
