-- pg_partman's create_parent() above left the script's search_path set at session level
-- (it restores with a session-level set_config). Give the session its default back.
RESET search_path;
