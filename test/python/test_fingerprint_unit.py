"""Unit tests of plpython/fingerprint.py (fingerprint algorithm version 2), run as plain Python:
no database. The module is loaded from its path, as the build wraps that same file."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import pathlib
import time

import pytest

SOURCE = pathlib.Path(__file__).resolve().parents[2] / "plpython" / "fingerprint.py"
_spec = importlib.util.spec_from_file_location("pg_observe_fingerprint", SOURCE)
fp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fp)

HEADER = (
    "# pg_observe:function monitoring._fingerprint_events(p_events text, p_rules text) RETURNS text "
    "LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp\n"
    "# pg_observe:entry fingerprint_events_json(p_events, p_rules)\n"
)


def run(event, rules=None):
    return fp.fingerprint_event(event, rules or [])


def parse(text):
    return fp.parse_stack_trace(text)


def where(frames):
    return [(f["filename"], f["function"], f["lineno"], f["in_app"]) for f in frames]


# ------------------------------------------------------------------------------------- samples

PYTHON_CHAINED = """\
Traceback (most recent call last):
  File "/srv/app/app/db.py", line 10, in query
    return cursor.execute(sql)
           ^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3/dist-packages/psycopg/cursor.py", line 732, in execute
    raise ex.with_traceback(None)
psycopg.errors.UniqueViolation: duplicate key value violates unique constraint "orders_pkey"
DETAIL:  Key (id)=(42) already exists.

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/srv/app/app/orders.py", line 42, in charge
    self.db.query(sql)
  File "/srv/app/app/db.py", line 12, in query
    raise DatabaseError("insert failed") from exc
app.errors.DatabaseError: insert failed
"""

PYTHON_DURING_HANDLING = """\
Traceback (most recent call last):
  File "/home/alice/app/app/orders.py", line 30, in load
    return cache[key]
KeyError: 'order:42'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/home/alice/app/manage.py", line 8, in <module>
    main()
  File "/home/alice/app/app/orders.py", line 33, in load
    raise LookupError(f"order {key} missing")
LookupError: order 42 missing
"""

PYTHON_RECURSION = """\
Traceback (most recent call last):
  File "/app/tree.py", line 20, in <module>
    walk(root)
  File "/app/tree.py", line 5, in walk
    return walk(node.child)
  File "/app/tree.py", line 5, in walk
    return walk(node.child)
  File "/app/tree.py", line 5, in walk
    return walk(node.child)
  [Previous line repeated 996 more times]
  File "/app/tree.py", line 3, in walk
    if node.value > LIMIT:
RecursionError: maximum recursion depth exceeded in comparison
"""

V8 = """\
/app/src/orders.js:42
    throw new TypeError(`order ${id} not found`);
    ^

TypeError: order 42 not found
    at charge (/app/src/orders.js:42:13)
    at Orders.process [as run] (/app/src/orders.js:10:5)
    at async Promise.all (index 0)
    at new Checkout (file:///app/src/checkout.mjs:3:9)
    at /app/src/index.js:1:2
    at Object.<anonymous> (/app/node_modules/express/lib/router.js:5:1)
    at Module._compile (node:internal/modules/cjs/loader:1256:14)"""

FIREFOX = """\
charge@https://cdn.example.com/static/js/main.3f9a1c2b.js:42:13
process/<@https://cdn.example.com/static/js/main.3f9a1c2b.js:10:5
async*run@https://cdn.example.com/static/js/vendor.91ab23cd.js:1:100
@debugger eval code:1:1
global code@https://cdn.example.com/index.html:5:3
[native code]"""

JAVA = """\
2024-01-01 12:00:00.123 ERROR [main] c.a.Orders - charge failed
Exception in thread "main" java.lang.IllegalStateException: order 42 failed
\tat com.acme.Orders.charge(Orders.java:42)
\tat com.acme.Orders$$Lambda$123/0x0000000800c4b440.apply(Unknown Source)
\tat com.acme.Orders$1.run(Orders.java:50)
\tat java.base/java.util.ArrayList.forEach(ArrayList.java:1511)
\tat com.acme.Main.main(Main.java:10)
\tSuppressed: java.lang.RuntimeException: close failed
\t\tat com.acme.Resource.close(Resource.java:5)
\t\t... 2 more
Caused by: java.io.IOException: disk full
\tat java.base/java.io.FileOutputStream.writeBytes(Native Method)
\tat com.acme.Store.write(Store.java:77)
\tat com.acme.Orders.lambda$charge$0(Orders.java:40)
\t... 12 more"""

GO = """\
panic: runtime error: index out of range [3] with length 2

goroutine 1 [running]:
main.charge(0x1, 0x2)
\t/app/main.go:42 +0x1d
main.(*Server).handle.func1(...)
\t/app/server.go:17
github.com/acme/app/orders.(*Svc).Charge(0xc000010000)
\t/home/alice/go/pkg/mod/github.com/acme/app@v1.2.0/orders/svc.go:88 +0x3a
panic({0x4a1b20?, 0xc000012345?})
\t/usr/local/go/src/runtime/panic.go:770 +0x132
main.main()
\t/app/main.go:10 +0x1d
created by main.start in goroutine 1
\t/app/main.go:5 +0x25

goroutine 7 [chan receive]:
main.worker()
\t/app/main.go:99 +0x10
exit status 2"""

RUBY = """\
/app/orders.rb:42:in 'charge': order 42 failed (RuntimeError)
\tfrom /app/orders.rb:10:in `block in process'
\tfrom /usr/lib/ruby/3.2.0/set.rb:5:in `each'
\tfrom /app/vendor/bundle/ruby/3.2.0/gems/rack-2.2.8/lib/rack.rb:5:in `call'
\tfrom app.rb:1:in '<main>'
/app/store.rb:7:in 'write': disk full (IOError)
\tfrom /app/orders.rb:40:in 'charge'
"""


def python_frames(prefix="/srv/app", line_shift=0):
    return [
        {"filename": "manage.py", "abs_path": f"{prefix}/manage.py", "function": "<module>", "lineno": 8 + line_shift,
         "in_app": True},
        {"filename": "base.py", "abs_path": "/usr/lib/python3/dist-packages/django/core/base.py", "function": "run",
         "lineno": 400 + line_shift, "in_app": False},
        {"filename": "orders.py", "abs_path": f"{prefix}/app/orders.py", "function": "charge",
         "lineno": 42 + line_shift, "in_app": True, "context_line": "raise ValueError(msg)"},
    ]


def sentry_event(**extra):
    event = {
        "event_id": "fc6d8c0c43fc4630ad850ee518f1b9d0",
        "platform": "python",
        "environment": "production",
        "exception": {
            "values": [
                {"type": "ConnectionError", "value": "connection refused to 10.0.0.7:5432", "module": "socket",
                 "stacktrace": {"frames": [
                     {"module": "app.db", "function": "connect", "filename": "app/db.py",
                      "abs_path": "/srv/app/app/db.py", "lineno": 12, "in_app": True},
                     {"module": "psycopg.connection", "function": "connect", "filename": "psycopg/connection.py",
                      "lineno": 90, "in_app": False},
                 ]}},
                {"type": "OrderError", "value": "could not charge order 42", "module": "app.errors",
                 "stacktrace": {"frames": [
                     {"module": "app.views", "function": "checkout", "filename": "app/views.py",
                      "abs_path": "/srv/app/app/views.py", "lineno": 30, "in_app": True,
                      "context_line": "orders.charge(order)"},
                     {"module": "app.orders", "function": "charge", "filename": "app/orders.py",
                      "abs_path": "/srv/app/app/orders.py", "lineno": 42, "in_app": True},
                 ]}},
            ]
        },
        "tags": [["region", "eu-west-1"], ["browser", "Firefox"]],
        "transaction": "/checkout",
        "logger": "app.orders",
    }
    event.update(extra)
    return event


# --------------------------------------------------------------------------------- module shape


def test_header_lines_are_verbatim():
    assert SOURCE.read_text().startswith(HEADER)


def test_top_level_is_only_imports_constants_and_defs():
    tree = ast.parse(SOURCE.read_text())
    allowed = (ast.Import, ast.ImportFrom, ast.Assign, ast.FunctionDef, ast.Expr)
    for node in tree.body:
        assert isinstance(node, allowed), ast.dump(node)[:80]
        if isinstance(node, ast.Expr):
            assert isinstance(node.value, ast.Constant)  # the docstring
        if isinstance(node, ast.ImportFrom):
            assert node.module != "__future__"  # a syntax error inside a function body
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert not names & {"plpy", "SD", "GD"}
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported <= {"fnmatch", "hashlib", "json", "math", "re"}


def test_runs_as_a_plpython_body():
    """PL/Python compiles the file as the body of a function (each line indented by a tab)
    and appends the return statement the build adds."""
    lines = SOURCE.read_text().rstrip().splitlines()
    lines.append("return fingerprint_events_json(p_events, p_rules)")
    body = "def __plpython_procedure(p_events, p_rules):\n" + "".join(f"\t{line}\n" for line in lines)
    namespace: dict = {}
    exec(compile(body, "fingerprint.py", "exec"), namespace)
    procedure = namespace["__plpython_procedure"]
    out = json.loads(procedure(json.dumps([{"exception_type": "E", "message": "m 1"}, 7]), None))
    assert [r["method"] for r in out] == ["message", "fallback"]
    assert out[0]["fingerprint"] == run({"exception_type": "E", "message": "m 2"})["fingerprint"]


# ------------------------------------------------------------------------------ result object


def test_result_keys_and_hash():
    result = run({"exception_type": "ValueError", "message": "order 42 not found", "frames": python_frames()})
    assert list(result) == list(fp.RESULT_KEYS) == [
        "fingerprint", "fingerprint_version", "method", "inputs", "exception_type", "message", "title",
        "culprit", "frames", "group_title"]
    assert result["fingerprint_version"] == 2
    expected = hashlib.sha256("\n".join(result["inputs"]).encode()).hexdigest()
    assert result["fingerprint"] == expected and len(expected) == 64
    assert result["method"] == "stack"
    assert result["inputs"] == ["ValueError", "manage.py:<module>", "orders.py:charge"]
    assert result["exception_type"] == "ValueError"
    assert result["message"] == "order 42 not found"
    assert result["title"] == "ValueError: order <int> not found"
    assert result["culprit"] == "orders.py in charge"
    assert result["group_title"] is None
    assert [list(f) for f in result["frames"]] == [list(fp.FRAME_KEYS)] * 3
    assert result["frames"][2]["context_line"] == "raise ValueError(msg)"
    assert result["frames"][0]["module"] is None


def test_culprit_uses_module_and_falls_back_to_the_innermost_frame():
    frames = [{"module": "app.orders", "function": "charge", "in_app": True},
              {"module": "requests.api", "function": "post", "in_app": False}]
    assert run({"exception_type": "E", "frames": frames})["culprit"] == "app.orders in charge"
    frames[0]["in_app"] = False
    assert run({"exception_type": "E", "frames": frames})["culprit"] == "requests.api in post"
    assert run({"exception_type": "E", "message": "x"})["culprit"] is None


def test_title_is_parameterised_and_capped():
    result = run({"exception_type": "KeyError", "message": "\n\n  user 12 has   no key   \nsecond"})
    assert result["title"] == "KeyError: user <int> has no key"
    long = run({"exception_type": "E", "message": "word " * 500})["title"]
    assert len(long) == 200 and long.endswith("\u2026")
    assert run({"message": "plain message"})["title"] == "plain message"
    assert run({"exception_type": "E"})["title"] == "E"


# --------------------------------------------------------------------------- stack text: Python


def test_python_chain_with_direct_cause():
    links = parse(PYTHON_CHAINED)
    assert [link["type"] for link in links] == ["psycopg.errors.UniqueViolation", "app.errors.DatabaseError"]
    assert links[0]["message"] == (
        'duplicate key value violates unique constraint "orders_pkey"\nDETAIL:  Key (id)=(42) already exists.')
    assert where(links[0]["frames"]) == [("db.py", "query", 10, True), ("cursor.py", "execute", 732, False)]
    assert links[0]["frames"][0]["context_line"] == "return cursor.execute(sql)"  # carets skipped
    assert links[0]["frames"][0]["abs_path"] == "/srv/app/app/db.py"
    assert where(links[1]["frames"]) == [("orders.py", "charge", 42, True), ("db.py", "query", 12, True)]
    result = run({"stack_trace": PYTHON_CHAINED})
    assert result["method"] == "stack"
    assert result["exception_type"] == "app.errors.DatabaseError"
    assert result["message"] == "insert failed"
    assert result["inputs"] == [
        "psycopg.errors.UniqueViolation", "db.py:query",
        "app.errors.DatabaseError", "orders.py:charge", "db.py:query"]
    assert where(result["frames"]) == where(links[1]["frames"])


def test_python_chain_during_handling():
    links = parse(PYTHON_DURING_HANDLING)
    assert [(link["type"], link["message"]) for link in links] == [
        ("KeyError", "'order:42'"), ("LookupError", "order 42 missing")]
    assert where(links[1]["frames"]) == [("manage.py", "<module>", 8, True), ("orders.py", "load", 33, True)]


def test_python_recursion_collapses():
    frames = parse(PYTHON_RECURSION)[0]["frames"]
    assert [f["function"] for f in frames] == ["<module>", "walk", "walk", "walk", "walk"]
    result = run({"stack_trace": PYTHON_RECURSION})
    assert result["inputs"] == ["RecursionError", "tree.py:<module>", "tree.py:walk"]
    deeper = PYTHON_RECURSION.replace(
        "  [Previous line repeated", '  File "/app/tree.py", line 5, in walk\n    return walk(node.child)\n  [P')
    assert run({"stack_trace": deeper})["fingerprint"] == result["fingerprint"]


def test_python_in_app_heuristic():
    text = "".join(f'  File "{path}", line 1, in f\n' for path in (
        "/app/x.py", "/venv/lib/python3.11/site-packages/a.py", "/usr/lib/python3/dist-packages/b.py",
        "/usr/lib/python3.11/json/c.py", "/usr/local/lib/python3.12/d.py", "<frozen importlib._bootstrap>",
        "/home/bob/.pyenv/versions/3.11.2/lib/python3.11/e.py"))
    frames = parse("Traceback (most recent call last):\n" + text + "OSError: x\n")[0]["frames"]
    assert [f["in_app"] for f in frames] == [True, False, False, False, False, False, False]


def test_python_type_and_message_only_fill_what_the_event_lacks():
    assert run({"stack_trace": PYTHON_CHAINED, "exception_type": "Custom"})["exception_type"] == "Custom"
    result = run({"stack_trace": PYTHON_CHAINED, "exception_type": "Error", "message": "mine"})
    assert (result["exception_type"], result["message"]) == ("app.errors.DatabaseError", "mine")


# ------------------------------------------------------------------------------- stack text: JS


def test_v8_frames_innermost_last():
    links = parse(V8)
    assert len(links) == 1
    assert (links[0]["type"], links[0]["message"]) == ("TypeError", "order 42 not found")
    frames = links[0]["frames"]
    assert [(f["function"], f["abs_path"], f["lineno"], f["in_app"]) for f in frames] == [
        ("Module._compile", "node:internal/modules/cjs/loader", 1256, False),
        ("Object.<anonymous>", "/app/node_modules/express/lib/router.js", 5, False),
        (None, "/app/src/index.js", 1, True),
        ("new Checkout", "file:///app/src/checkout.mjs", 3, True),
        ("Promise.all", None, None, False),
        ("Orders.process", "/app/src/orders.js", 10, True),
        ("charge", "/app/src/orders.js", 42, True),
    ]
    assert run({"stack_trace": V8})["inputs"] == [
        "TypeError", "index.js:?", "checkout.mjs:new Checkout", "orders.js:Orders.process", "orders.js:charge"]


def test_v8_caused_by_and_node_cause():
    text = ("Error: request failed\n    at fetchOrder (/app/api.js:10:5)\n    at main (/app/index.js:3:1) {\n"
            "  [cause]: Error: connect ECONNREFUSED 127.0.0.1:5432\n"
            "      at TCPConnectWrap.afterConnect (node:net:1555:16)\n}")
    links = parse(text)
    assert [link["message"] for link in links] == ["connect ECONNREFUSED 127.0.0.1:5432", "request failed"]
    assert [f["function"] for f in links[1]["frames"]] == ["main", "fetchOrder"]


def test_firefox_and_safari_frames():
    frames = parse(FIREFOX)[0]["frames"]
    assert [(f["function"], f["filename"], f["lineno"]) for f in frames] == [
        ("global code", "index.html", 5), (None, "debugger eval code", 1), ("run", "vendor.91ab23cd.js", 1),
        ("process/<", "main.3f9a1c2b.js", 10), ("charge", "main.3f9a1c2b.js", 42)]
    assert frames[-1]["abs_path"] == "https://cdn.example.com/static/js/main.3f9a1c2b.js"
    result = run({"exception_type": "TypeError", "stack_trace": FIREFOX})
    assert result["inputs"][-3:] == ["vendor.js:run", "main.js:process/<", "main.js:charge"]


def test_bundle_hashes_do_not_split_groups():
    rebuilt = FIREFOX.replace("3f9a1c2b", "77d0e1aa").replace("91ab23cd", "0042beef")
    first = run({"exception_type": "TypeError", "stack_trace": FIREFOX})
    assert run({"exception_type": "TypeError", "stack_trace": rebuilt})["fingerprint"] == first["fingerprint"]
    names = ["index-BxWq3k2L.js", "_app-a1b2c3d4e5f6a7b8.js", "2.3f9a1c2b.chunk.js", "app.js?v=123#x",
             "jquery-3.6.0.min.js", "webpack:///./src/orders.js", "C:\\app\\orders.py"]
    frames = [{"filename": n, "function": "f"} for n in names]
    assert run({"exception_type": "E", "frames": frames})["inputs"][1:] == [
        "index.js:f", "_app.js:f", "2.chunk.js:f", "app.js:f", "jquery-3.6.0.min.js:f", "orders.js:f", "orders.py:f"]


# ----------------------------------------------------------------------------- stack text: JVM


def test_java_blocks_causes_and_suppressed():
    links = parse(JAVA)
    assert [(link["type"], link["message"]) for link in links] == [
        ("java.io.IOException", "disk full"), ("java.lang.IllegalStateException", "order 42 failed")]
    main = links[1]["frames"]
    assert [(f["module"], f["function"], f["filename"], f["lineno"], f["in_app"]) for f in main] == [
        ("com.acme.Main", "main", "Main.java", 10, True),
        ("java.util.ArrayList", "forEach", "ArrayList.java", 1511, False),
        ("com.acme.Orders$1", "run", "Orders.java", 50, True),
        ("com.acme.Orders$$Lambda$123/0x0000000800c4b440", "apply", None, None, True),
        ("com.acme.Orders", "charge", "Orders.java", 42, True),
    ]
    cause = links[0]["frames"]
    assert [(f["module"], f["function"], f["in_app"]) for f in cause] == [
        ("com.acme.Orders", "lambda$charge$0", True), ("com.acme.Store", "write", True),
        ("java.io.FileOutputStream", "writeBytes", False)]
    result = run({"stack_trace": JAVA})
    assert result["inputs"] == [
        "java.io.IOException", "com.acme.Orders:lambda$charge$", "com.acme.Store:write",
        "java.lang.IllegalStateException", "com.acme.Main:main", "com.acme.Orders$:run",
        "com.acme.Orders$$Lambda:apply", "com.acme.Orders:charge"]
    assert result["culprit"] == "com.acme.Orders in charge"


def test_java_generated_names_are_normalised():
    other = (JAVA.replace("$$Lambda$123/0x0000000800c4b440", "$$Lambda$987/0x00000008000a0040")
             .replace("Orders$1", "Orders$3").replace("lambda$charge$0", "lambda$charge$2"))
    assert run({"stack_trace": other})["fingerprint"] == run({"stack_trace": JAVA})["fingerprint"]
    frames = [{"module": m, "function": "f"} for m in (
        "com.acme.Svc$$EnhancerBySpringCGLIB$$1a2b3c", "jdk.proxy2.$Proxy42", "com.acme.Svc$$Lambda/0x000001f8010031e8",
        "jdk.internal.reflect.GeneratedMethodAccessor17", "com.acme.Order$HibernateProxy$Xy12Zq")]
    assert run({"exception_type": "E", "frames": frames})["inputs"][1:] == [
        "com.acme.Svc$$EnhancerBySpringCGLIB:f", "jdk.proxy2.$Proxy:f", "com.acme.Svc$$Lambda:f",
        "jdk.internal.reflect.GeneratedMethodAccessor:f", "com.acme.Order$HibernateProxy:f"]


def test_dotnet_frames():
    text = ("System.InvalidOperationException: order 42 failed\n"
            "   at Acme.Orders.Charge(Int32 id) in /src/Acme/Orders.cs:line 42\n"
            "   at System.Linq.Enumerable.ToList(IEnumerable source)\n")
    frames = parse(text)[0]["frames"]
    assert [(f["module"], f["function"], f["filename"], f["lineno"], f["in_app"]) for f in frames] == [
        ("System.Linq.Enumerable", "ToList", None, None, False), ("Acme.Orders", "Charge", "Orders.cs", 42, True)]


# ------------------------------------------------------------------------------- stack text: Go


def test_go_panic():
    links = parse(GO)
    assert len(links) == 1
    assert (links[0]["type"], links[0]["message"]) == ("panic", "runtime error: index out of range [3] with length 2")
    assert [(f["module"], f["function"], f["filename"], f["lineno"], f["in_app"]) for f in links[0]["frames"]] == [
        ("main", "start", "main.go", 5, True),
        ("main", "main", "main.go", 10, True),
        (None, "panic", "panic.go", 770, False),
        ("github.com/acme/app/orders", "(*Svc).Charge", "svc.go", 88, False),
        ("main", "(*Server).handle.func1", "server.go", 17, True),
        ("main", "charge", "main.go", 42, True),
    ]
    result = run({"stack_trace": GO})
    assert result["inputs"] == ["panic", "main:start", "main:main", "main:(*Server).handle.func", "main:charge"]
    assert result["title"] == "panic: runtime error: index out of range [<int>] with length <int>"


def test_go_offsets_goroutine_ids_and_closure_numbers_do_not_count():
    other = (GO.replace("+0x1d", "+0x2f").replace("goroutine 1 [running]", "goroutine 8812 [running]")
             .replace("func1", "func3").replace("[3] with length 2", "[9] with length 4"))
    assert run({"stack_trace": other})["fingerprint"] == run({"stack_trace": GO})["fingerprint"]
    fatal = "fatal error: concurrent map writes\n\ngoroutine 5 [running]:\nmain.store(...)\n\t/app/cache.go:9 +0x5"
    result = run({"stack_trace": fatal})
    assert (result["exception_type"], result["inputs"]) == ("fatal error", ["fatal error", "main:store"])


# ----------------------------------------------------------------------------- stack text: Ruby


def test_ruby_backtrace_with_cause():
    links = parse(RUBY)
    assert [(link["type"], link["message"]) for link in links] == [
        ("IOError", "disk full"), ("RuntimeError", "order 42 failed")]
    assert where(links[1]["frames"]) == [
        ("app.rb", "<main>", 1, True), ("rack.rb", "call", 5, False), ("set.rb", "each", 5, False),
        ("orders.rb", "block in process", 10, True), ("orders.rb", "charge", 42, True)]
    assert where(links[0]["frames"]) == [("orders.rb", "charge", 40, True), ("store.rb", "write", 7, True)]
    result = run({"stack_trace": RUBY})
    assert result["inputs"] == ["IOError", "orders.rb:charge", "store.rb:write",
                                "RuntimeError", "app.rb:<main>", "orders.rb:block in process", "orders.rb:charge"]


# ------------------------------------------------------------------------ grouping invariants


@pytest.mark.parametrize("text", [PYTHON_CHAINED, V8, FIREFOX, JAVA, GO, RUBY], ids=[
    "python", "v8", "firefox", "java", "go", "ruby"])
def test_line_numbers_and_ids_in_messages_do_not_change_the_fingerprint(text):
    import re

    shifted = re.sub(r"(?<=:)(\d+)|(?<=line )(\d+)", lambda m: str(int(m.group()) + 7), text)
    shifted = shifted.replace("42", "4242")
    assert shifted != text
    assert run({"stack_trace": shifted})["fingerprint"] == run({"stack_trace": text})["fingerprint"]


def test_machine_paths_do_not_change_the_fingerprint():
    moved = PYTHON_DURING_HANDLING.replace("/home/alice/app", "/srv/app")
    assert run({"stack_trace": moved})["fingerprint"] == run({"stack_trace": PYTHON_DURING_HANDLING})["fingerprint"]
    a = run({"exception_type": "ValueError", "frames": python_frames("/home/alice/app")})
    b = run({"exception_type": "ValueError", "frames": python_frames("/srv/app", line_shift=5)})
    assert a["fingerprint"] == b["fingerprint"]


def test_different_functions_or_types_give_different_fingerprints():
    base = run({"stack_trace": PYTHON_CHAINED})["fingerprint"]
    assert run({"stack_trace": PYTHON_CHAINED.replace("in charge", "in refund")})["fingerprint"] != base
    assert run({"stack_trace": PYTHON_CHAINED.replace("DatabaseError:", "TimeoutError:")})["fingerprint"] != base
    assert run({"stack_trace": V8.replace("at charge", "at refund")})["fingerprint"] != run({"stack_trace": V8})[
        "fingerprint"]
    frames = python_frames()
    assert run({"exception_type": "ValueError", "frames": frames})["fingerprint"] != run(
        {"exception_type": "TypeError", "frames": frames})["fingerprint"]


def test_structured_frames_and_parsed_text_agree_for_the_projects_client():
    text = ('Traceback (most recent call last):\n  File "/srv/app/manage.py", line 8, in <module>\n    main()\n'
            '  File "/srv/app/app/orders.py", line 42, in charge\n    raise ValueError(msg)\nValueError: bad\n')
    frames = [{"filename": "manage.py", "abs_path": "/srv/app/manage.py", "function": "<module>", "lineno": 8,
               "in_app": True},
              {"filename": "orders.py", "abs_path": "/srv/app/app/orders.py", "function": "charge", "lineno": 42,
               "in_app": True}]
    structured = run({"exception_type": "ValueError", "message": "bad", "frames": frames, "stack_trace": text})
    parsed = run({"stack_trace": text})
    assert structured["fingerprint"] == parsed["fingerprint"]
    assert [(f["filename"], f["abs_path"], f["function"], f["lineno"]) for f in parsed["frames"]] == [
        (f["filename"], f["abs_path"], f["function"], f["lineno"]) for f in frames]


# ------------------------------------------------------------------------------ stack details


def test_only_in_app_frames_count_unless_none_is():
    frames = python_frames()
    result = run({"exception_type": "E", "frames": frames})
    assert "base.py:run" not in result["inputs"]
    for frame in frames:
        frame["in_app"] = False
    assert run({"exception_type": "E", "frames": frames})["inputs"] == [
        "E", "manage.py:<module>", "base.py:run", "orders.py:charge"]
    for frame in frames:
        del frame["in_app"]
    assert run({"exception_type": "E", "frames": frames})["inputs"][1:] == [
        "manage.py:<module>", "base.py:run", "orders.py:charge"]


def test_recursion_counts_once_and_context_lines_never_count():
    frames = [{"module": "app.tree", "function": "walk", "lineno": i, "context_line": f"line {i}"} for i in range(50)]
    result = run({"exception_type": "RecursionError", "frames": frames})
    assert result["inputs"] == ["RecursionError", "app.tree:walk"]
    frames.insert(10, {"module": "app.tree", "function": "visit"})
    assert run({"exception_type": "RecursionError", "frames": frames})["inputs"] == [
        "RecursionError", "app.tree:walk", "app.tree:visit", "app.tree:walk"]


def test_frames_without_any_name_fall_back_to_the_message():
    result = run({"exception_type": "E", "message": "id 5", "frames": [{"lineno": 3}, {"colno": 1}]})
    assert (result["method"], result["inputs"]) == ("message", ["E", "id <int>"])
    assert len(result["frames"]) == 2


# -------------------------------------------------------------------------------- Sentry shape


def test_sentry_event_with_chained_values():
    result = run(sentry_event())
    assert result["method"] == "stack"
    assert result["exception_type"] == "OrderError"
    assert result["message"] == "could not charge order 42"
    assert result["title"] == "OrderError: could not charge order <int>"
    assert result["inputs"] == ["ConnectionError", "app.db:connect", "OrderError", "app.views:checkout",
                                "app.orders:charge"]
    assert result["culprit"] == "app.orders in charge"
    assert [f["function"] for f in result["frames"]] == ["checkout", "charge"]
    assert result["frames"][0]["filename"] == "app/views.py"


def test_sentry_message_forms():
    assert run({"message": {"formatted": "user 5 failed", "message": "user %s failed"}})["inputs"] == [
        "<no type>", "user %s failed"]
    result = run({"logentry": {"formatted": "disk 93% full", "message": None}, "level": "warning"})
    assert (result["method"], result["message"], result["inputs"]) == (
        "message", "disk 93% full", ["<no type>", "disk <int>% full"])
    assert run({"logentry": {"message": "a"}})["message"] == "a"
    assert run({"message": "x", "exception": {"values": [{"type": "E"}]}})["message"] == "x"


def test_sentry_top_level_stacktrace_and_threads():
    frames = [{"function": "main", "module": "app"}, {"function": "work", "module": "app.jobs"}]
    assert run({"message": "m", "stacktrace": {"frames": frames}})["inputs"] == [
        "<no type>", "app:main", "app.jobs:work"]
    threads = {"values": [{"id": 1, "stacktrace": {"frames": [{"function": "idle"}]}},
                          {"id": 2, "crashed": True, "stacktrace": {"frames": frames}}]}
    assert run({"message": "m", "threads": threads})["inputs"][1:] == ["app:main", "app.jobs:work"]


def test_exception_as_a_plain_list_and_the_mixed_trigger_shape():
    assert run({"exception": [{"type": "E", "value": "v"}]})["inputs"] == ["E", "v"]
    mixed = sentry_event(exception_type="Error", message="outer", frames=python_frames())
    result = run(mixed)
    assert result["exception_type"] == "OrderError"  # the chain wins over the flat fields
    assert result["inputs"][-2:] == ["app.views:checkout", "app.orders:charge"]
    values = sentry_event()["exception"]["values"]
    values[-1].pop("stacktrace")
    filled = run({"exception": {"values": values}, "frames": python_frames()})
    assert filled["inputs"][-2:] == ["manage.py:<module>", "orders.py:charge"]


def test_more_than_ten_chained_exceptions_keeps_the_raised_one_and_nearest_causes():
    values = [{"type": f"E{i}", "value": "v", "stacktrace": {"frames": [{"function": f"f{i}"}]}} for i in range(15)]
    result = run({"exception": {"values": values}})
    assert result["inputs"][0] == "E5" and result["inputs"][-2:] == ["E14", "?:f14"]
    assert result["inputs"].count("?:f5") == 1 and len(result["inputs"]) == 20


# ------------------------------------------------------------------------------- precedence


def test_precedence_explicit_then_rule_then_stack_then_message_then_fallback():
    rules = [{"type": "ValueError", "fingerprint": ["value-errors"]}]
    event = {"exception_type": "ValueError", "message": "m", "frames": python_frames(), "fingerprint": ["mine"]}
    assert (run(event, rules)["method"], run(event, rules)["inputs"]) == ("explicit", ["mine"])
    del event["fingerprint"]
    assert (run(event, rules)["method"], run(event, rules)["inputs"]) == ("rule", ["value-errors"])
    assert run(event)["method"] == "stack"
    del event["frames"]
    assert run(event)["method"] == "message"
    assert run({"level": "error"})["method"] == "fallback"
    assert run({"level": "error"})["inputs"] == ["<no type>", "<no message>"]
    assert run({})["fingerprint"] == run({"tags": {"a": "b"}})["fingerprint"]


def test_message_without_type_and_type_without_message():
    assert run({"message": "only text 5"})["inputs"] == ["<no type>", "only text <int>"]
    assert run({"exception_type": "E"})["inputs"] == ["E", "<no message>"]
    assert run({"exception_type": "E", "message": "a\n\n  b 1 \nc"})["inputs"] == ["E", "a", "b <int>"]


def test_default_placeholder_expansion():
    base = {"exception_type": "E", "message": "order 5"}
    for placeholder in ("{{ default }}", "{{default}}", "{{  default  }}"):
        result = run({**base, "fingerprint": [placeholder, "tenant-a"]})
        assert result["method"] == "explicit"
        assert result["inputs"] == ["E", "order <int>", "tenant-a"]
    only_default = run({**base, "fingerprint": ["{{ default }}"]}, [{"type": "E", "fingerprint": ["r"]}])
    assert (only_default["method"], only_default["inputs"]) == ("rule", ["r"])
    rule = run(base, [{"type": "E", "fingerprint": ["db", "{{ default }}"]}])
    assert (rule["method"], rule["inputs"]) == ("rule", ["db", "E", "order <int>"])


def test_explicit_fingerprint_coercion_and_caps():
    assert run({"fingerprint": "single"})["inputs"] == ["single"]
    assert run({"fingerprint": [1, 2.5, None, {"a": 1}, "x", True]})["inputs"] == ["1", "2.5", "x"]
    assert run({"fingerprint": [None, {}]})["method"] == "fallback"
    assert run({"fingerprint": []})["method"] == "fallback"
    capped = run({"fingerprint": ["p" * 5000] + [str(i) for i in range(9999)]})
    assert len(capped["inputs"]) == 100 and len(capped["inputs"][0]) == 1000
    assert capped["inputs"][-1] == "98"


# ------------------------------------------------------------------------------------- rules


@pytest.mark.parametrize(("rule", "matches"), [
    ({"type": "Order*"}, True),
    ({"type": "ConnectionError"}, True),  # any exception of the chain
    ({"type": "order*"}, False),  # case-sensitive
    ({"message": "*charge order*"}, True),
    ({"message": "*refused*"}, True),
    ({"message": "charge*"}, False),
    ({"module": "psycopg.*"}, True),
    ({"module": "django.*"}, False),
    ({"function": "checkout"}, True),
    ({"function": "check"}, False),
    ({"path": "*/app/views.py"}, True),  # abs_path
    ({"path": "psycopg/connection.py"}, True),  # filename
    ({"path": "*.rb"}, False),
    ({"environment": "prod*"}, True),
    ({"environment": "staging"}, False),
    ({"tags": {"region": "eu-*"}}, True),
    ({"tags": {"region": "eu-*", "browser": "Chrome"}}, False),
    ({"tags": {"missing": "*"}}, False),
    ({"transaction": "/check*"}, True),
    ({"logger": "app.*"}, True),
    ({"type": ["KeyError", "OrderError"]}, True),
    ({"type": "OrderError", "environment": "production", "function": "charge"}, True),
    ({"type": "OrderError", "environment": "staging"}, False),
    ({}, True),
    ({"type": 5}, False),
    ({"tags": ["region"]}, False),
])
def test_rule_match_keys(rule, matches):
    result = run(sentry_event(), [{**rule, "fingerprint": ["ruled"]}])
    assert (result["method"] == "rule") is matches
    assert (result["inputs"] == ["ruled"]) is matches


def test_first_matching_rule_wins_and_title_only_rules():
    rules = [
        {"type": "KeyError", "fingerprint": ["keys"]},
        {"type": "OrderError", "title": "Checkout failures"},
        {"type": "OrderError", "fingerprint": ["never reached"]},
    ]
    result = run(sentry_event(), rules)
    assert result["method"] == "stack"
    assert result["fingerprint"] == run(sentry_event())["fingerprint"]
    assert result["group_title"] == "Checkout failures"
    both = run(sentry_event(), [{"function": "charge", "fingerprint": ["charges"], "title": "Charges"}])
    assert (both["method"], both["inputs"], both["group_title"]) == ("rule", ["charges"], "Charges")


def test_rules_are_skipped_without_outcome_and_with_explicit_fingerprint():
    rules = [{"type": "OrderError"}, {"type": "OrderError", "fingerprint": "orders"}]
    assert run(sentry_event(), rules)["inputs"] == ["orders"]
    explicit = run(sentry_event(fingerprint=["mine"]), [{"title": "T", "fingerprint": ["r"]}])
    assert (explicit["inputs"], explicit["group_title"]) == (["mine"], None)
    assert run(sentry_event(), "not a list")["method"] == "stack"
    assert run(sentry_event(), [None, 3, "x", {"title": "ok"}])["group_title"] == "ok"


def test_rules_on_flat_events_with_tags_as_object_and_message_glob():
    event = {"exception_type": "OperationalError", "message": "could not connect: disk full on /dev/sda1",
             "environment": "staging", "tags": {"db": "primary", "shard": 3}}
    rules = [{"message": "*disk full*", "tags": {"db": "prim*", "shard": "3"}, "fingerprint": ["disk-full"]}]
    assert run(event, rules)["inputs"] == ["disk-full"]


# --------------------------------------------------------------------------- parameterisation


@pytest.mark.parametrize(("text", "expected"), [
    ("mail alice.smith+tag@mail.example.co.uk now", "mail <email> now"),
    ("GET https://api.example.com/v1/orders?id=42&x=y failed.", "GET <url> failed."),
    ("job 7f3a9c2e-1b2c-4d5e-8f90-123456789abc died", "job <uuid> died"),
    ("from 10.0.0.7 and 192.168.1.254", "from <ip> and <ip>"),
    ("peer fe80::1ff:fe23:4567:890a and ::1 and 2001:db8:85a3:0:0:8a2e:370:7334", "peer <ip> and <ip> and <ip>"),
    ("at 2024-03-10T12:00:00.123Z", "at <date>"),
    ("at 2024-03-10 12:00:00+01:00", "at <date>"),
    ("on 10/03/2024 or 03.10.2024 or 2024/03/10", "on <date> or <date> or <date>"),
    ("on Mar 10, 2024 or 10 March 2024", "on <date> or <date>"),
    ("Date: Tue, 10 Mar 2024 12:00:00 GMT", "Date: <date>"),
    ("at 12:30:45 today", "at <date> today"),
    ("ptr 0x7ffeedc0 freed", "ptr <hex> freed"),
    ("object deadbeef12 gone", "object <hex> gone"),
    ("sha 5d41402abc4b2a76b9719d911017c592 and e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     "sha <hex> and <hex>"),
    ("commit 356a192b7913b04c54574d18c28d46e6395428ab", "commit <hex>"),
    ("took 150ms, then 2.5s, then 3m, then 1h2m3s, then 5 seconds", "took <duration>, then <duration>, then "
     "<duration>, then <duration>, then <duration>"),
    ('user_id=42 name="John Doe" mode=\'fast lane\' a==b', "user_id=<value> name=<value> mode=<value> a==b"),
    ("ratio 0.75 of 1.5e3", "ratio <float> of <float>"),
    ("order 12345678 and 42 items", "order <int> and <int> items"),
    ("id_42 v2 abc123", "id_42 v2 abc123"),
    ("host db-1.internal:5432", "host db-<int>.internal:<int>"),
    ("no variable parts here", "no variable parts here"),
])
def test_parameterisation(text, expected):
    assert fp.parameterize(text) == expected


def test_parameterisation_order_and_message_step():
    assert fp.parameterize("see https://bob@example.com/x") == "see https://<email>/x"
    assert fp.parameterize("key=7f3a9c2e-1b2c-4d5e-8f90-123456789abc") == "key=<value>"
    a = run({"exception_type": "TimeoutError", "message": "query 5521 timed out after 30s on 10.0.0.1"})
    b = run({"exception_type": "TimeoutError", "message": "query 77 timed out after 2.5s on 10.9.8.7"})
    assert a["fingerprint"] == b["fingerprint"]
    assert a["inputs"] == ["TimeoutError", "query <int> timed out after <duration> on <ip>"]
    c = run({"exception_type": "TimeoutError", "message": "query 77 failed"})
    assert c["fingerprint"] != a["fingerprint"]
    third_line = run({"exception_type": "E", "message": "a\nb\nc 1"})
    assert third_line["fingerprint"] == run({"exception_type": "E", "message": "a\nb\nc 2"})["fingerprint"]


# --------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("event", [None, 5, "text", [1, 2], True, 1.5])
def test_non_object_events_fall_back(event):
    result = run(event)
    assert result["method"] == "fallback"
    assert result["inputs"] == ["<no type>", "<no message>"]
    assert result["exception_type"] == "Error" and result["message"] == "" and result["frames"] == []


def test_wrong_types_everywhere():
    event = {
        "exception_type": ["not", "a", "string"],
        "message": {"nested": True},
        "frames": "File x, line 1",
        "stack_trace": 42,
        "tags": [["a", "b"], "junk", ["x"], {"key": "k", "value": "v"}, [1, 2]],
        "environment": {"prod": 1},
        "fingerprint": {"a": "b"},
        "exception": {"values": "nope"},
        "logentry": [7],
        "threads": "t",
        "stacktrace": [1, 2],
    }
    result = run(event, [{"tags": {"a": "b", "k": "v", "1": "2"}, "title": "tagged"}])
    assert result["method"] == "fallback" and result["group_title"] == "tagged"
    frames = [
        {"filename": 5, "function": ["f"], "lineno": "42", "in_app": "true", "module": None},
        {"function": "g", "lineno": "forty", "in_app": "maybe", "context_line": 3.5},
        {"function": "h", "lineno": 1e300, "abs_path": float("nan")},
        {"function": "i", "lineno": -1},
        {"function": "j", "lineno": True, "in_app": 1},
        "not a frame", None, 17, ["f"],
    ]
    result = run({"exception_type": "E", "frames": frames, "exception": {"values": [None, 3, {"type": 9}]}})
    assert [(f["filename"], f["function"], f["lineno"], f["in_app"]) for f in result["frames"]] == [
        ("5", None, 42, True), (None, "g", None, None), (None, "h", None, None), (None, "i", None, None),
        (None, "j", None, None)]
    assert result["frames"][1]["context_line"] == "3.5"
    assert result["exception_type"] == "9"  # the Sentry chain wins; numbers are accepted as text
    json.dumps(result, allow_nan=False)


def test_nul_characters_are_removed():
    event = {"exception_type": "Val\x00ueError", "message": "bad\x00 id 5",
             "frames": [{"function": "ch\x00arge", "filename": "\x00x.py"}], "fingerprint": ["a\x00b", "{{ default }}"]}
    result = run(event, [{"title": "t\x00itle"}])
    text = json.dumps(result)
    assert "\\u0000" not in text and "\x00" not in text
    assert result["inputs"] == ["ab", "ValueError", "x.py:charge"]
    assert result["message"] == "bad id 5"
    stack = run({"stack_trace": PYTHON_CHAINED.replace("charge", "cha\x00rge")})
    assert stack["fingerprint"] == run({"stack_trace": PYTHON_CHAINED})["fingerprint"]
    out = fp.fingerprint_events_json('[{"message": "a\\u0000b"}]', '[{"title": "x\\u0000y"}]')
    assert "\\u0000" not in out and json.loads(out)[0]["group_title"] == "xy"


def test_huge_message_and_stack_trace():
    started = time.perf_counter()
    message = ("order 42 failed; " * 700_000)[:10_000_000]
    result = run({"exception_type": "E", "message": message, "stack_trace": "x" * 10_000_000})
    assert len(result["message"]) == 65536
    assert result["inputs"] == ["E", fp.parameterize(message[:1000])]
    assert len(result["title"]) == 200
    big = "Traceback (most recent call last):\n" + '  File "/app/a.py", line 1, in f\n' * 5000 + "E: x\n"
    assert len(big) > 65536
    assert run({"stack_trace": big})["inputs"] == ["<no type>", "a.py:f"]  # cut before the last line
    assert time.perf_counter() - started < 1.0


def test_frame_limits():
    frames = [{"function": f"f{i}", "module": "m", "in_app": True} for i in range(600)]
    result = run({"exception_type": "E", "frames": frames})
    assert len(result["frames"]) == 500
    assert result["frames"][0]["function"] == "f100" and result["frames"][-1]["function"] == "f599"
    assert len(result["inputs"]) == 501
    long_field = run({"exception_type": "E", "frames": [{"function": "f" * 5000, "module": "m" * 5000}]})
    assert len(long_field["frames"][0]["function"]) == 1000
    assert len(long_field["culprit"]) == 200
    text = "TypeError: x\n" + "".join(f"    at f{i} (/app/a.js:{i}:1)\n" for i in range(700))
    frames = parse(text)[0]["frames"]
    assert len(frames) == 500 and frames[-1]["function"] == "f0" and frames[0]["function"] == "f499"


def test_ten_thousand_fingerprint_parts_are_fast():
    started = time.perf_counter()
    result = run({"fingerprint": ["{{ default }}"] + ["x"] * 9999, "exception_type": "E"})
    assert time.perf_counter() - started < 0.1
    assert result["method"] == "explicit" and len(result["inputs"]) == 101


def test_deeply_nested_garbage():
    nested: object = "bottom"
    for _ in range(100_000):
        nested = {"a": [nested]}
    event = {"exception_type": "E", "message": "m", "context": nested, "frames": [nested, {"function": nested}],
             "exception": nested, "tags": nested, "fingerprint": [nested]}
    result = run(event, [{"tags": {"a": "*"}, "title": "x"}])
    assert result["exception_type"] == "E" and result["method"] == "message"
    deep = "[" * 50_000 + "]" * 50_000
    text = f'[{{"exception_type": "Deep", "message": "m", "context": {deep}}}, {deep}, {{"message": "ok"}}]'
    out = json.loads(fp.fingerprint_events_json(text, None))
    assert [r["title"] for r in out] == ["Deep: m", "Error", "ok"]
    assert [r["method"] for r in out] == ["message", "fallback", "message"]


# ------------------------------------------------------------------------------- JSON entry


def test_json_entry_one_result_per_event_in_order():
    events = [sentry_event(), {"exception_type": "E", "message": "m"}, None, {"stack_trace": GO}]
    out = json.loads(fp.fingerprint_events_json(json.dumps(events), json.dumps([{"type": "E", "title": "Es"}])))
    assert [r["method"] for r in out] == ["stack", "message", "fallback", "stack"]
    assert [r["group_title"] for r in out] == [None, "Es", None, None]
    assert out[0] == run(sentry_event())
    for rules in ("[]", None, "null", "not json", '{"type": "E", "title": "single"}'):
        assert len(json.loads(fp.fingerprint_events_json('[{"exception_type": "E"}]', rules))) == 1


def test_json_entry_bad_batches():
    assert fp.fingerprint_events_json(None, None) == "[]"
    assert fp.fingerprint_events_json("[]", "[]") == "[]"
    single = json.loads(fp.fingerprint_events_json('{"exception_type": "E", "message": "m"}', None))
    assert [r["inputs"] for r in single] == [["E", "m"]]
    assert [r["method"] for r in json.loads(fp.fingerprint_events_json("garbage", None))] == ["fallback"]
    truncated = json.loads(fp.fingerprint_events_json('[{"message": "a"}, {"message": "b"', None))
    assert truncated[0]["message"] == "a" and len(truncated) == 2
    huge_int = '[{"exception_type": "E", "message": "m", "lineno": ' + "9" * 5000 + '}, {"message": "n"}]'
    assert [r["message"] for r in json.loads(fp.fingerprint_events_json(huge_int, None))] == ["m", "n"]
    nan = json.loads(fp.fingerprint_events_json('[{"message": NaN, "frames": [{"lineno": Infinity}]}]', None))
    assert nan[0]["method"] == "fallback"


def test_json_output_is_ascii_and_valid_for_jsonb():
    out = fp.fingerprint_events_json('[{"exception_type": "E\\ud800", "message": "caf\\u00e9 \\ud83d\\ude00"}]', None)
    assert out.isascii()
    assert "\\ud800" not in out and "\\ud83d\\ude00" in out
    result = json.loads(out)[0]
    assert result["message"] == "caf\u00e9 \U0001f600" and result["exception_type"] == "E?"
