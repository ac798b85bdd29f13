-- PL/Python bodies live in plpython/*.py and are wrapped into CREATE FUNCTION at build time.

-- @plpython plpython/plpython_runtime.py
COMMENT ON FUNCTION monitoring._plpython_runtime() IS
    'Python version of PL/Python and whether the standard-library modules the senders use import';
