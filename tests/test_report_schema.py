"""The JSON report keeps the shape promised in schemas/report.schema.json."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from poseidon.cli import main
from poseidon.sandbox import Sandbox
from support.sandboxes import point_at

SCHEMA = json.loads((Path(__file__).parent.parent / "schemas" / "report.schema.json").read_text())


def test_the_schema_itself_is_valid_and_rejects_a_report_missing_a_field() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    partial = {"playbook": "x", "droplets": []}
    with pytest.raises(jsonschema.ValidationError, match="is a required property") as caught:
        jsonschema.validate(partial, SCHEMA)
    assert caught.value.validator == "required"
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(partial))
    assert {e.validator for e in errors} == {"required"}  # nothing but the missing fields is wrong with it
    missing = sorted(e.message.removesuffix(" is a required property").strip("'") for e in errors)
    assert missing == ["duration", "failed", "interrupted", "mode", "name", "prices", "started"]


@pytest.mark.parametrize("command", ["apply", "plan"])
def test_json_reports_validate_against_the_schema(
    command: str,
    tmp_path: Path,
    shared_sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    point_at(shared_sandbox, monkeypatch)
    playbook = tmp_path / "site.yaml"
    playbook.write_text(
        "version: 1\n"
        "name: planned\n"
        "droplets:\n  - test\n  - other\n"
        "  - {name: planned-only, create: {region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}}\n"
        "steps:\n"
        "  - run: '[ \"${droplet.name}\" != other ] || exit 5'\n"
        "  - nohup: {cmd: 'sleep 321', name: schema-check, grace: 0.1}\n"
        "report: {ps: true, top: true}\n"
    )
    args = [command, str(playbook), "--json"] + (["--limit", "test,other"] if command == "apply" else [])
    main(args)
    report = json.loads(capsys.readouterr().out)
    jsonschema.validate(report, SCHEMA)
    if command == "apply":
        assert report["failed"] is True  # checked on a report with a failed step in it
    else:
        assert [d["to_create"] for d in report["droplets"]] == [False, False, True]  # and one with a droplet to create
