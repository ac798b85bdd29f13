# pg_observe:function monitoring._scrub(p_value text, p_keys text[]) RETURNS text LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = ''  # noqa: E501
# pg_observe:entry scrub_json(p_value, p_keys)
"""Replaces secrets in a JSON document with "[Filtered]" before it is stored.

- A value under a key that contains one of the configured words (case-insensitive, ignoring
  "-", "_", spaces, tabs and line breaks: "password" matches "Password", "db_password",
  "X-Password", "pass word") is replaced whole.
- Credit-card-like numbers (13 to 19 ASCII digits, spaces or dashes allowed, passing the Luhn
  check) inside any string are replaced.
- Nesting deeper than MAX_DEPTH is cut: the subtree becomes "[Filtered: nested too deep]".
The input is JSON text (jsonb cast to text); the output is JSON text.

The rules are those of the database's cheap test (_occurrence_needs_scrub), which decides
whether this runs at all: what it cannot see, this must not do either, or an event's fate
would depend on its other fields. So the separators are those the test reads in JSON text
(not form feeds or Unicode spaces), case is folded as PostgreSQL's case-insensitive match
folds it (the Kelvin sign is no "k"), and digits are ASCII.
"""

from __future__ import annotations

import json
import re
import sys

FILTERED = "[Filtered]"
MAX_DEPTH = 64
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b", re.ASCII)
_DIGIT = re.compile(r"[0-9]")
_SEPARATORS = re.compile(r"[-_ \t\n\r]")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _scrub_cards(text: str) -> str:
    def repl(match: re.Match) -> str:
        digits = re.sub(r"[ -]", "", match.group(0))
        return FILTERED if 13 <= len(digits) <= 19 and _luhn_ok(digits) else match.group(0)

    return _CARD.sub(repl, text) if _DIGIT.search(text) else text


def _fold_case(text: str) -> str:
    """Lower case, but no letter outside ASCII becomes an ASCII one (the Kelvin sign stays)."""
    if text.isascii():
        return text.lower()
    return "".join(c if not c.isascii() and c.lower().isascii() else c.lower() for c in text)


def _secret_key(key: str, words: tuple) -> bool:
    k = _SEPARATORS.sub("", _fold_case(key))
    return any(w in k for w in words)


def scrub(value: object, words: tuple, depth: int = 0) -> object:
    """Returns value with secrets replaced; never raises for JSON-shaped input."""
    if depth > MAX_DEPTH:
        return "[Filtered: nested too deep]"
    if isinstance(value, dict):
        return {
            k: (FILTERED if _secret_key(str(k), words) and v is not None else scrub(v, words, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub(v, words, depth + 1) for v in value]
    if isinstance(value, str):
        return _scrub_cards(value)
    return value


def scrub_json(p_value: str | None, p_keys: list | None) -> str | None:
    if p_value is None:
        return None
    # PostgreSQL accepts JSON nested far deeper than Python's default recursion limit.
    if sys.getrecursionlimit() < 25000:
        sys.setrecursionlimit(25000)
    words = tuple(_SEPARATORS.sub("", _fold_case(w)) for w in (p_keys or []) if w)
    try:
        doc = json.loads(p_value)
    except (ValueError, RecursionError):
        return json.dumps("[Filtered: unreadable]")
    try:
        return json.dumps(scrub(doc, words), ensure_ascii=False)
    except RecursionError:
        return json.dumps("[Filtered: nested too deep]")
