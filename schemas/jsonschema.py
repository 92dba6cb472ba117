"""JSON Schema files for producers and consumers in other languages, generated from the models.

`python -m schemas.jsonschema --write` regenerates `schemas/json/`; `--check`
exits non-zero when a committed file differs from what the models say (the
test suite runs the same comparison).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas.alerts import AlertEvent
from schemas.deadletter import DeadLetter
from schemas.events import Event
from schemas.snapshot import Snapshot
from schemas.snapshot.series import Series

JSON_DIR = Path(__file__).parent / "json"

BASE_URI = "urn:leadlag:schema:"


def _with_id(schema: dict[str, Any], name: str, title: str) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{BASE_URI}{name}",
        "title": title,
        **{k: v for k, v in schema.items() if k != "title"},
    }


def generated() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for every input and output of leadlag."""
    return {
        "event.schema.json": _with_id(
            TypeAdapter(Event).json_schema(mode="validation"), "event.schema.json", "leadlag input event"
        ),
        "event-envelope.schema.json": _with_id(
            TypeAdapter(list[Event]).json_schema(mode="validation"),
            "event-envelope.schema.json",
            "leadlag envelope: a JSON array of events",
        ),
        "snapshot.schema.json": _with_id(
            Snapshot.model_json_schema(mode="serialization"), "snapshot.schema.json", "leadlag snapshot"
        ),
        "series.schema.json": _with_id(
            Series.model_json_schema(mode="serialization"),
            "series.schema.json",
            "leadlag series: the hourly and daily leading indicators and the months' traffic (/api/series/*)",
        ),
        "alert.schema.json": _with_id(
            TypeAdapter(AlertEvent).json_schema(mode="serialization"),
            "alert.schema.json",
            "leadlag alert: divergence or another alert, by alert_name",
        ),
        "deadletter.schema.json": _with_id(
            DeadLetter.model_json_schema(mode="serialization"), "deadletter.schema.json", "leadlag dead letter"
        ),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def stale_files() -> list[str]:
    """Names of committed schema files that differ from the models (or are missing)."""
    stale = []
    for name, schema in generated().items():
        path = JSON_DIR / name
        if not path.exists() or path.read_text(encoding="utf-8") != render(schema):
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="regenerate schemas/json/")
    action.add_argument("--check", action="store_true", help="fail if schemas/json/ is out of date")
    args = parser.parse_args(argv)
    if args.write:
        JSON_DIR.mkdir(exist_ok=True)
        for name, schema in generated().items():
            (JSON_DIR / name).write_text(render(schema), encoding="utf-8")
            print(f"wrote {JSON_DIR.name}/{name}")
        return 0
    stale = stale_files()
    for name in stale:
        print(f"out of date: schemas/json/{name} (run: python -m schemas.jsonschema --write)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
