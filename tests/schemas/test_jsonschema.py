"""The committed JSON Schema files say what the models say, and accept what producers send."""

from __future__ import annotations

import json

import jsonschema
import pytest

from schemas.jsonschema import JSON_DIR, generated, stale_files
from stream.simulation import generate_count


def test_the_committed_schema_files_match_the_models() -> None:
    assert stale_files() == [], "run: python -m schemas.jsonschema --write"


def test_every_simulated_event_validates_against_the_published_event_schema() -> None:
    schema = json.loads((JSON_DIR / "event.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for event in generate_count(500, seed=2):
        validator.validate(json.loads(json.dumps(event, default=str)))


@pytest.mark.parametrize("name", sorted(generated()))
def test_each_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(generated()[name])
