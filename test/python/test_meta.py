"""The version lives in the control file; META.json and the client must agree with it."""

from __future__ import annotations

import json
import pathlib
import re

import pg_observe

ROOT = pathlib.Path(__file__).resolve().parents[2]


def control_version() -> str:
    control = (ROOT / "extension/pg_observe.control").read_text()
    match = re.search(r"^default_version\s*=\s*'([^']+)'", control, re.MULTILINE)
    assert match
    return match.group(1)


def test_meta_json_matches_the_control_file() -> None:
    meta = json.loads((ROOT / "META.json").read_text())
    version = control_version()
    assert meta["version"] == version
    assert meta["provides"]["pg_observe"]["version"] == version
    assert meta["provides"]["pg_observe"]["file"] == f"extension/pg_observe--{version}.sql"
    assert (ROOT / meta["provides"]["pg_observe"]["docfile"]).exists()
    assert meta["meta-spec"]["version"] == "1.0.0"


def test_client_version_matches() -> None:
    assert pg_observe.__version__ == control_version()
