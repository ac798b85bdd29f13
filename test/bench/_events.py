"""Realistic error events for the benchmarks: Python tracebacks of 10 to 30 frames, a context of
about 1 KB, drawn from a fixed number of distinct error sites (fingerprints)."""

from __future__ import annotations

import random
import uuid

MODULES = ["orders", "payments", "users", "search", "inventory", "shipping", "auth", "reports", "billing", "cart"]
TYPES = ["ValueError", "KeyError", "TimeoutError", "PaymentError", "IntegrityError", "PermissionError"]


def site(i: int) -> dict:
    """Error site number i: a fixed exception type and a fixed stack of 10 to 30 frames."""
    rnd = random.Random(i)
    depth = rnd.randint(10, 30)
    frames = []
    for d in range(depth):
        module = rnd.choice(MODULES)
        in_app = d >= 3  # the outer frames are the framework's
        path = f"/srv/app/{module}.py" if in_app else f"/usr/lib/python3/dist-packages/framework/{module}.py"
        frames.append({"filename": f"{module}.py", "abs_path": path,
                       "module": f"app.{module}" if in_app else f"framework.{module}",
                       "function": f"{rnd.choice(['handle', 'load', 'save', 'check', 'compute'])}_{i % 97}_{d}",
                       "lineno": rnd.randint(1, 900), "in_app": in_app, "context_line": "result = step(value)"})
    return {"type": TYPES[i % len(TYPES)], "frames": frames}


def event(site_no: int, n: int, sites: dict) -> dict:
    s = sites.setdefault(site_no, site(site_no))
    frames = s["frames"]
    stack = "Traceback (most recent call last):\n" + "".join(
        f'  File "{f["abs_path"]}", line {f["lineno"]}, in {f["function"]}\n    {f["context_line"]}\n' for f in frames
    ) + f"{s['type']}: order {n} failed"
    return {
        "event_id": uuid.uuid4().hex,
        "exception_type": s["type"],
        "message": f"order {n} failed for user {n % 5000}",
        "stack_trace": stack,
        "frames": frames,
        "environment": "production",
        "release": "2.4.1",
        "service": "api",
        "user": {"id": f"u{n % 5000}"},
        "context": {"request_id": str(uuid.uuid4()), "path": f"/orders/{n}", "user_agent": "Mozilla/5.0 " * 8,
                    "payload": {"items": [{"sku": f"SKU-{k}", "qty": k, "price": 9.99 * k} for k in range(12)]},
                    "flags": ["beta", "eu", "mobile"], "note": "x" * 200},
        "trace_id": uuid.uuid4().hex,
        "span_id": uuid.uuid4().hex[:16],
    }


def events(count: int, distinct_sites: int = 500, seed: int = 7) -> list[dict]:
    rnd = random.Random(seed)
    sites: dict = {}
    return [event(rnd.randrange(distinct_sites), n, sites) for n in range(count)]
