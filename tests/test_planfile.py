"""`poseidon plan --out plan.json` then `poseidon apply plan.json`: acting on exactly what was planned."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import poseidon.api as po
from poseidon.cli import main
from poseidon.sandbox import Sandbox
from support.sandboxes import pointed

PLAYBOOK = """
    version: 1
    droplets: [alpha, beta]
    steps:
      - run: {cmd: touch planned, creates: planned}
    report: {ps: false, top: false}
"""


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with pointed(["alpha", "beta"], monkeypatch) as sandbox:
        yield sandbox


@pytest.fixture
def planned(tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> Path:
    playbook = tmp_path / "site.yaml"
    playbook.write_text(textwrap.dedent(PLAYBOOK))
    assert main(["plan", str(playbook), "--out", str(tmp_path / "plan.json")]) == 0
    capsys.readouterr()
    return tmp_path / "plan.json"


@pytest.mark.sandbox
def test_a_plan_records_each_droplet_and_applying_it_does_the_work(planned: Path, sandbox: Sandbox) -> None:
    document = json.loads(planned.read_text())
    assert document["playbook"] == "site.yaml"
    assert set(document["droplets"]) == {"alpha", "beta"}
    assert document["droplets"]["alpha"]["ip_address"] == sandbox.address("alpha")
    assert [d["steps"][0]["status"] for d in document["predicted"]["droplets"]] == ["would-change"] * 2
    assert not (sandbox.home("alpha") / "planned").exists()
    assert main(["apply", str(planned)]) == 0
    assert (sandbox.home("alpha") / "planned").exists() and (sandbox.home("beta") / "planned").exists()


@pytest.mark.sandbox
def test_applying_a_plan_refuses_a_droplet_recreated_since(
    planned: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    client = po.connect()
    old = client.droplets.by_name("beta")
    old.delete()
    new = client.droplets.create(
        "beta", region="nyc3", size="s-1vcpu-1gb", image="ubuntu-24-04-x64", wait=True, timeout=30
    )
    assert main(["apply", str(planned)]) == 2
    err = capsys.readouterr().err
    assert f"beta was {old.id} at {old.ip_address} when planned, is {new.id} at {new.ip_address} now" in err
    assert "alpha" not in err
    assert not (sandbox.home("alpha") / "planned").exists()  # refused before any step anywhere


@pytest.mark.sandbox
def test_applying_a_plan_refuses_when_the_playbook_changed_since(
    planned: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = planned.parent / "site.yaml"
    playbook.write_text(playbook.read_text().replace("touch planned", "touch other"))
    assert main(["apply", str(planned)]) == 2
    assert "site.yaml changed since this plan was made" in capsys.readouterr().err


def test_a_damaged_plan_file_is_refused_with_its_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "plan.json"
    broken.write_text("{not json")
    assert main(["apply", str(broken)]) == 2
    assert f"{broken}: cannot read this plan" in capsys.readouterr().err


@pytest.mark.sandbox
def test_applying_a_plan_refuses_when_an_environment_value_it_read_differs(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    playbook = tmp_path / "site.yaml"
    playbook.write_text(
        "version: 1\ndroplets: [alpha]\nsteps:\n  - run: echo ${env:BRANCH} > deployed-branch\n"
        "report: {ps: false, top: false}\n"
    )
    monkeypatch.setenv("BRANCH", "main")
    assert main(["plan", str(playbook), "--out", str(tmp_path / "plan.json")]) == 0
    recorded = json.loads((tmp_path / "plan.json").read_text())["environment"]
    assert set(recorded["digests"]) == {"BRANCH"} and "main" not in json.dumps(recorded)
    monkeypatch.setenv("BRANCH", "feature")
    assert main(["apply", str(tmp_path / "plan.json")]) == 2
    assert "BRANCH differ(s) from the value(s) this plan was made with: plan again" in capsys.readouterr().err
    assert not (sandbox.home("alpha") / "deployed-branch").exists()
    monkeypatch.delenv("BRANCH")
    assert main(["apply", str(tmp_path / "plan.json")]) == 2  # unset is not the value planned with either
    monkeypatch.setenv("BRANCH", "main")
    assert main(["apply", str(tmp_path / "plan.json")]) == 0
    assert (sandbox.home("alpha") / "deployed-branch").read_text() == "main\n"


@pytest.mark.sandbox
def test_a_plan_made_on_the_sandbox_is_applied_there_and_one_made_elsewhere_is_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POSEIDON_API_URL", raising=False)  # no API but the sandbox's: a token would be asked for
    playbook = tmp_path / "site.yaml"
    playbook.write_text("version: 1\ndroplets: [solo]\nsteps:\n  - run: {cmd: touch planned, creates: planned}\n")
    try:
        assert main(["plan", str(playbook), "--sandbox", "--out", str(tmp_path / "plan.json")]) == 0
        assert json.loads((tmp_path / "plan.json").read_text())["sandbox"] is True
        assert main(["apply", str(tmp_path / "plan.json")]) == 0
        assert (tmp_path / ".poseidon" / "sandbox" / "site" / "hosts").is_dir()
        homes = list((tmp_path / ".poseidon" / "sandbox" / "site" / "hosts").glob("*/planned"))
        assert len(homes) == 1, "applied on the sandbox the plan was made on"
    finally:
        main(["sandbox", "reset", "--playbook", str(playbook)])
    capsys.readouterr()


@pytest.mark.sandbox
def test_a_plan_made_against_the_api_refuses_the_sandbox(planned: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apply", str(planned), "--sandbox"]) == 2
    assert "was made against the DigitalOcean API, not a sandbox" in capsys.readouterr().err


@pytest.mark.sandbox
def test_applying_a_plan_refuses_when_a_file_a_file_step_takes_changed_since(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    playbook = tmp_path / "site.yaml"
    playbook.write_text(
        "version: 1\ndroplets: [alpha]\nsteps:\n  - file: {path: app.ini, template: app.tmpl}\n"
        "report: {ps: false, top: false}\n"
    )
    (tmp_path / "app.tmpl").write_text("port = 5000\n")
    assert main(["plan", str(playbook), "--out", str(tmp_path / "plan.json")]) == 0
    assert set(json.loads((tmp_path / "plan.json").read_text())["files"]) == {"app.tmpl"}
    (tmp_path / "app.tmpl").write_text("port = 5001\n")
    assert main(["apply", str(tmp_path / "plan.json")]) == 2
    assert "plan.json: app.tmpl changed since this plan was made: plan again" in capsys.readouterr().err
    assert not (sandbox.home("alpha") / "app.ini").exists()
    (tmp_path / "app.tmpl").write_text("port = 5000\n")
    assert main(["apply", str(tmp_path / "plan.json")]) == 0
    assert (sandbox.home("alpha") / "app.ini").read_text() == "port = 5000\n"
