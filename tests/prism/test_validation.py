"""Prism really validates: a malformed request fails, so a passing test means something."""

from __future__ import annotations

import pytest
import requests

import poseidon.api
from poseidon.api import Client
from poseidon.errors import ValidationError
from support.prism import TOKEN, PrismServer, Traffic


def test_a_droplet_body_without_a_size_is_refused_with_422(client: Client, traffic: Traffic) -> None:
    with pytest.raises(ValidationError) as refused:
        client.post("/v2/droplets", json={"name": "web-1", "region": "nyc3", "image": "ubuntu-22-04-x64"})
    assert refused.value.status == 422
    (exchange,) = traffic.exchanges
    messages = [violation["message"] for violation in exchange.violations]
    assert "Request body must have required property 'size'" in messages


def test_a_page_larger_than_the_document_allows_is_refused(prism: PrismServer, traffic: Traffic) -> None:
    session = requests.Session()
    session.hooks["response"].append(traffic.record)
    with session, poseidon.api.Client(TOKEN, api_url=prism.url, session=session, per_page=201) as client:
        with pytest.raises(ValidationError) as refused:
            client.droplets.list()
    assert refused.value.status == 422
    (exchange,) = traffic.exchanges
    assert exchange.violations[0]["location"] == ["request", "query", "per_page"]


def test_prism_refuses_a_request_without_a_bearer_token(prism: PrismServer) -> None:
    # Prism checks that the document's bearer scheme is used (any token will
    # do), so every accepted request in this suite carried one.
    for headers in ({}, {"Authorization": "Basic cHJpc206dG9rZW4="}):
        answer = requests.get(f"{prism.url}/v2/account", headers=headers, timeout=10)
        assert answer.status_code == 401
        assert "Invalid security scheme used" in answer.headers["sl-violations"]
