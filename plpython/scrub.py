# pg_observe:function monitoring._scrub(p_value text, p_keys text[]) RETURNS text LANGUAGE plpython3u IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp  # noqa: E501
# pg_observe:entry scrub_json(p_value, p_keys)
"""Replaces secrets in a JSON document with "[Filtered]" before it is stored.

- A value under a key that contains one of the configured words (case-insensitive for A to
  Z, ignoring "-", "_", spaces, tabs and line breaks: "password" matches "Password",
  "db_password", "X-Password", "pass word") is replaced whole. The words come lower-cased
  and without separators (error_capture_state.scrub_words).
- Credit-card-like numbers (13 to 19 ASCII digits, spaces or dashes allowed, passing the Luhn
  check) inside any string are replaced.
- Nesting deeper than MAX_DEPTH is cut: the subtree becomes "[Filtered: nested too deep]".
The input is JSON text (jsonb cast to text); the output is JSON text, numbers as written (the
input itself when nothing was replaced).

The rules are those of the database's cheap test (_occurrence_needs_scrub), which decides
whether this runs at all: what it cannot see, this must not do either, or an event's fate
would depend on its other fields. So the separators are those the test reads in JSON text
(not form feeds or Unicode spaces), only A to Z are folded to lower case (the test's
case-insensitive match may fold more, never less), and digits are ASCII.
"""

from __future__ import annotations

import json
import re
import string
import sys

FILTERED = "[Filtered]"
MAX_DEPTH = 64
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b", re.ASCII)
_DIGIT = re.compile(r"[0-9]")
_SEPARATORS = re.compile(r"[-_ \t\n\r]")
_PLACEHOLDER = re.compile(r'"\\u0000([0-9]+)"')


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


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _secret_key(key: str, words: tuple) -> bool:
    k = _SEPARATORS.sub("", key.translate(_ASCII_LOWER))
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
    words = tuple(_SEPARATORS.sub("", w.translate(_ASCII_LOWER)) for w in (p_keys or []) if w)
    # Numbers stay as written: as Python numbers, 10.50 would come back as 10.5, and an
    # integer of more than 4,300 digits would not parse. Each becomes a
    # placeholder string that no JSON text from PostgreSQL can hold (a NUL), put back after.
    numbers: list[str] = []

    def keep(text: str) -> str:
        numbers.append(text)
        return "\0" + str(len(numbers) - 1)

    try:
        doc = json.loads(p_value, parse_float=keep, parse_int=keep)
    except (ValueError, RecursionError):
        return json.dumps("[Filtered: unreadable]")
    try:
        scrubbed = scrub(doc, words)
        if scrubbed == doc:
            return p_value
        return _PLACEHOLDER.sub(lambda m: numbers[int(m.group(1))], json.dumps(scrubbed, ensure_ascii=False))
    except RecursionError:
        return json.dumps("[Filtered: nested too deep]")
