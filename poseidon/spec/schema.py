"""The JSON Schema (draft 2020-12) of a playbook as people write it, short forms
included: what editors use to complete and check a playbook.

Imports :mod:`.playbook` and :mod:`.models`.
"""

from __future__ import annotations

import copy
from typing import Any

from poseidon.spec.models import STEP_MODELS, StepBase
from poseidon.spec.playbook import Playbook

# ---------------------------------------------------------------------------
# JSON Schema, of the playbook as users write it


def _long_form(schema: dict[str, Any]) -> dict[str, Any]:
    """A step model's schema without ``kind``: the key that holds the body names it."""
    body = copy.deepcopy(schema)
    body["properties"].pop("kind", None)
    if "required" in body:
        body["required"] = [name for name in body["required"] if name != "kind"]
        if not body["required"]:
            del body["required"]
    body.pop("examples", None)
    return body


def _step_entry(kind: str, model: type[StepBase], definition: dict[str, Any]) -> dict[str, Any]:
    short = copy.deepcopy(definition["properties"][model.primary])
    short.pop("title", None)
    short.pop("default", None)
    examples: list[dict[str, Any]] = []
    for example in definition.get("examples", []):
        body = {key: value for key, value in example.items() if key != "kind"}
        examples.append({kind: body[model.primary] if list(body) == [model.primary] else body})
    entry: dict[str, Any] = {
        "description": f"Short form: the {model.primary}; long form: a mapping with options.",
        "anyOf": [short, {"$ref": f"#/$defs/{model.__name__}"}],
    }
    if model.long_only:  # one value cannot make it
        entry = {"description": "A mapping with options.", "$ref": f"#/$defs/{model.__name__}"}
    return {
        "type": "object",
        "title": f"{kind} step",
        "description": (model.__doc__ or "").strip(),
        "properties": {kind: entry},
        "required": [kind],
        "additionalProperties": False,
        "examples": examples,
    }


def _close_pattern_objects(schema: Any) -> None:
    # Keys checked by a pattern (vars, env) admit nothing else.
    if isinstance(schema, dict):
        if "patternProperties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            _close_pattern_objects(value)
    elif isinstance(schema, list):
        for value in schema:
            _close_pattern_objects(value)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a playbook as written, short forms included."""
    generated = Playbook.model_json_schema(mode="validation")
    definitions: dict[str, Any] = generated.pop("$defs")
    entries = []
    for kind, model in STEP_MODELS.items():
        definition = definitions[model.__name__]
        entries.append(_step_entry(kind, model, definition))
        definitions[model.__name__] = _long_form(definition)
    properties = generated["properties"]
    properties["steps"]["items"] = {"oneOf": entries}
    properties["droplets"]["items"] = {
        "anyOf": [
            {"type": "string", "description": "A droplet's name."},
            {"$ref": "#/$defs/NamedDroplet"},
            {"$ref": "#/$defs/TaggedDroplets"},
        ]
    }
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "poseidon playbook",
        "description": (Playbook.__doc__ or "").strip(),
        **{key: value for key, value in generated.items() if key not in ("title", "description")},
        "$defs": {name: definitions[name] for name in sorted(definitions)},
    }
    _close_pattern_objects(schema)
    return schema
