#!/usr/bin/env python3
"""Builds an extension script from the pieces under sql/ and plpython/.

    build_sql.py OUT PIECE...

Each piece is copied in order. Two directives, each alone on a line, are expanded:

    -- @include sql/path.sql            the named piece, expanded recursively
    -- @plpython plpython/name.py       a PL/Python body wrapped into CREATE OR REPLACE FUNCTION

A plpython file starts with two header comments (a trailing "# noqa: E501" is dropped):

    # pg_observe:function monitoring.name(arg type, ...) RETURNS type LANGUAGE plpython3u ...
    # pg_observe:entry main(arg, ...)

The file's text becomes the function body, followed by `return <entry>`, so the same file
can be imported and linted as ordinary Python.
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
GUARD = '\\echo Use "CREATE EXTENSION pg_observe" to load this file. \\quit\n'
_FUTURE = re.compile(r"^from __future__ import .*\n", re.MULTILINE)
_NOQA = re.compile(r"\s*#\s*noqa.*$")
DIRECTIVE = re.compile(r"^--\s*@(include|plpython)\s+(\S+)\s*$")


def wrap_plpython(path: pathlib.Path) -> str:
    # A PL/Python body is the inside of a function: __future__ imports cannot stand there
    # (the server's Python 3.11 needs none of them).
    text = _FUTURE.sub("", path.read_text())
    head = re.search(r"^# pg_observe:function (.+)$", text, re.M)
    entry = re.search(r"^# pg_observe:entry (.+)$", text, re.M)
    if not head or not entry:
        raise SystemExit(f"{path}: missing '# pg_observe:function' or '# pg_observe:entry' header")
    if "$pyfn$" in text:
        raise SystemExit(f"{path}: must not contain the dollar quote $pyfn$")
    return (
        f"-- from {path.relative_to(ROOT)}\n"
        f"CREATE OR REPLACE FUNCTION {_NOQA.sub('', head.group(1)).strip()}\nAS $pyfn$\n"
        f"{text.rstrip()}\n\nreturn {entry.group(1).strip()}\n$pyfn$;\n"
    )


def expand(path: pathlib.Path, seen: tuple = ()) -> str:
    if path in seen:
        raise SystemExit(f"include cycle: {' -> '.join(map(str, (*seen, path)))}")
    out = [f"-- {path.relative_to(ROOT)}\n"]
    for line in path.read_text().splitlines(keepends=True):
        m = DIRECTIVE.match(line)
        if not m:
            out.append(line)
        elif m.group(1) == "include":
            out.append(expand(ROOT / m.group(2), (*seen, path)))
        else:
            out.append(wrap_plpython(ROOT / m.group(2)))
    return "".join(out) + "\n"


def main() -> None:
    out, pieces = pathlib.Path(sys.argv[1]), sys.argv[2:]
    if not pieces:
        raise SystemExit("usage: build_sql.py OUT PIECE...")
    body = GUARD + "\n" + "".join(expand((ROOT / p).resolve()) for p in pieces)
    out.write_text(body)


if __name__ == "__main__":
    main()
