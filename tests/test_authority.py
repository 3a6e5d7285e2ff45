"""The sandbox's certificate authority: trusted for the sandbox alone, repaired when damaged,
and a bundle that carries no earlier sandbox's authority on."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from cryptography import x509

import poseidon.api as po
from poseidon.errors import UsageError
from poseidon.sandbox.authority import authority
from poseidon.sandbox.emulator import Emulator
from poseidon.settings import Settings


def test_the_authority_signs_for_loopback_only_and_keeps_no_key(tmp_path: Path) -> None:
    made = authority(tmp_path / "tls")
    ca = x509.load_pem_x509_certificate(made.ca.read_bytes())
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert {str(n.value) for n in constraints.value.permitted_subtrees or []} == {"127.0.0.0/8", "localhost"}
    assert sorted(p.name for p in made.folder.iterdir()) == ["bundle.pem", "ca.pem", "server.key", "server.pem"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in made.folder.iterdir())


@pytest.mark.parametrize("damage", ["garbage key", "another key", "another certificate"])
def test_a_damaged_or_mismatched_set_is_made_anew(tmp_path: Path, damage: str) -> None:
    first = authority(tmp_path / "tls")
    other = authority(tmp_path / "other")
    if damage == "garbage key":
        first.key.write_text("not a key\n")
    elif damage == "another key":
        first.key.write_bytes(other.key.read_bytes())
    else:
        first.certificate.write_bytes(other.certificate.read_bytes())
    again = authority(tmp_path / "tls")
    with Emulator("token", tls=again.server_context()) as emulator:
        answer = requests.get(f"{emulator.url}/v2/account", verify=str(again.ca), timeout=10)
    assert answer.status_code == 401  # served, and verified against the authority on disk


def test_the_bundle_holds_one_sandbox_authority_whatever_was_exported_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = authority(tmp_path / "one")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(first.bundle))  # what an earlier `sandbox up` exported
    monkeypatch.setenv("SSL_CERT_FILE", str(first.bundle))
    second = authority(tmp_path / "two")
    text = second.bundle.read_text()
    blocks = [b for b in text.split("-----END CERTIFICATE-----") if "BEGIN" in b]
    mine = [b for b in blocks if b.strip() + "\n-----END CERTIFICATE-----\n" in second.ca.read_text() + "\n"]
    assert len(mine) == 1
    assert first.ca.read_text() not in text
    assert len(blocks) == len({b.strip() for b in blocks})  # each authority once


def test_the_client_keeps_a_session_of_the_callers_own_and_says_when_the_bundle_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # which requests would put before any session's
        monkeypatch.delenv(name, raising=False)
    made = authority(tmp_path / "tls")
    elsewhere = authority(tmp_path / "elsewhere")  # the settings name another sandbox's bundle
    with Emulator("token", tls=made.server_context()) as emulator:
        session = requests.Session()
        session.verify = str(made.ca)
        settings = Settings(api_url=emulator.url, token="token", ca_bundle=str(elsewhere.bundle))
        client = po.connect(settings=settings, session=session)
        assert client.account()["status"] == "active"
    gone = Settings(api_url="https://127.0.0.1:9", token="token", ca_bundle=str(tmp_path / "down" / "bundle.pem"))
    with pytest.raises(UsageError, match="do not exist: a sandbox's, now down"):
        po.connect(settings=gone)
    folder = Settings(api_url="https://127.0.0.1:9", token="token", ca_bundle=str(tmp_path / "tls"))
    assert po.connect(settings=folder).ca_bundle == str(tmp_path / "tls")  # a folder, as requests takes one
