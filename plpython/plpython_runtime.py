# pg_observe:function monitoring._plpython_runtime() RETURNS jsonb LANGUAGE plpython3u STABLE SET search_path = pg_catalog, pg_temp  # noqa: E501
# pg_observe:entry runtime()
"""Reports the Python that runs inside the database and whether the senders' modules load.

PL/Python runs the operating system's python3, not any virtualenv, so senders may use the
standard library only; this tells an operator what that interpreter is.
"""

import importlib
import json
import sys

SENDER_MODULES = ("smtplib", "ssl", "urllib.request", "hmac", "hashlib", "email.message", "json")


def runtime() -> str:
    modules = {}
    for name in SENDER_MODULES:
        try:
            importlib.import_module(name)
            modules[name] = True
        except ImportError:
            modules[name] = False
    return json.dumps(
        {
            "python_version": "{}.{}.{}".format(*sys.version_info[:3]),
            "executable": sys.executable,
            "modules": modules,
        }
    )
