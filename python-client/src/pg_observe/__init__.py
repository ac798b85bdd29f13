"""pg_observe: the thin Python client of the pg_observe PostgreSQL extension."""

from pg_observe.errors import ErrorTracker, init_error_tracker
from pg_observe.events import event_from_exception

__all__ = ["ErrorTracker", "event_from_exception", "init_error_tracker"]
__version__ = "0.2.0"
