"""poseidon.api's core against the real emulator, and against handler functions for what it cannot stage.

The emulator runs in this process, on a thread; handler functions are mounted
as a requests transport (`support.transport`), one scenario each (a foreign host in a pagination
link, a redirect, a body that is not JSON). A fake clock stands in for time:
the client's waits advance it instead of sleeping.

The collections beyond droplets and keys are in ``test_api_resources.py``,
faults and the request budget in ``test_api_faults.py``.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import poseidon.api as po
from poseidon.droplet import Droplet
from poseidon.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    NotFoundError,
    RateLimitError,
    ResolveError,
    ServerError,
    UsageError,
    ValidationError,
)
from poseidon.sandbox.emulator import Emulator
from support.fakeclock import FakeClock
from support.transport import Reply, Sent, mounted

TOKEN = "dop_v1_test0123456789abcdef"


@pytest.fixture(autouse=True)
def isolated_from_this_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No variable or doctl config of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.startswith(("DIGITALOCEAN_", "POSEIDON_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture()
def emulator() -> Iterator[Emulator]:
    with Emulator(TOKEN) as emulator:
        yield emulator


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def sleeps(clock: FakeClock) -> list[float]:
    return clock.sleeps


def fake_timed(clock: FakeClock, api_url: str, **options: Any) -> po.Client:
    return po.Client(TOKEN, api_url=api_url, sleep=clock.sleep, clock=clock.time, **options)


@pytest.fixture()
def client(emulator: Emulator, clock: FakeClock) -> Iterator[po.Client]:
    with fake_timed(clock, emulator.url) as client:
        yield client


def droplet_gets(emulator: Emulator) -> list[str]:
    return [target for method, target in emulator.request_log if target.startswith("/v2/droplets")]


def droplet_data(droplet_id: int, name: str, ip: str = "203.0.113.10", region: str = "nyc3") -> dict[str, Any]:
    return {
        "id": droplet_id,
        "name": name,
        "status": "active",
        "tags": [],
        "region": {"slug": region},
        "networks": {"v4": [{"ip_address": ip, "type": "public"}], "v6": []},
    }


# -- droplets -----------------------------------------------------------------------


def test_list_follows_pagination_across_every_page(emulator: Emulator, clock: FakeClock) -> None:
    added = [emulator.add_droplet(f"node-{n:02}", f"127.0.1.{n}") for n in range(45)]
    client = fake_timed(clock, emulator.url, per_page=10)

    droplets = client.droplets.list()

    assert [d.id for d in droplets] == [d["id"] for d in added]
    assert all(isinstance(d, Droplet) and d.client is client for d in droplets)
    assert droplet_gets(emulator) == [
        "/v2/droplets?per_page=10",
        *(f"/v2/droplets?page={n}&per_page=10" for n in range(2, 6)),
        "/v2/droplets?per_page=10&type=gpus",
    ]


def test_list_asks_for_200_droplets_per_page_of_both_kinds_by_default(client: po.Client, emulator: Emulator) -> None:
    emulator.add_droplet("web-1", "127.0.0.2")
    assert [d.name for d in client.droplets.list()] == ["web-1"]
    assert droplet_gets(emulator) == ["/v2/droplets?per_page=200", "/v2/droplets?per_page=200&type=gpus"]


def test_list_includes_gpu_droplets_which_the_api_lists_only_when_asked(client: po.Client, emulator: Emulator) -> None:
    emulator.add_droplet("web-1", "127.0.0.2")
    emulator.add_droplet("trainer-1", "127.0.0.3", size="gpu-h100x1-80gb")

    assert [d.name for d in client.droplets.list()] == ["web-1", "trainer-1"]
    assert [d.name for d in client.droplets.list(type="gpus")] == ["trainer-1"]
    assert [d.name for d in client.droplets.list(type="droplets")] == ["web-1"]


def test_list_refuses_a_tag_with_a_type_as_the_api_does(client: po.Client, emulator: Emulator) -> None:
    with pytest.raises(ValidationError, match="by tag or by type"):
        client.droplets.list(tag="web", type="gpus")
    assert emulator.request_log == []


def test_list_with_a_tag_returns_only_droplets_carrying_it(client: po.Client, emulator: Emulator) -> None:
    emulator.add_droplet("web-1", "127.0.0.2", tags=["web"])
    emulator.add_droplet("db-1", "127.0.0.3", tags=["db"])
    emulator.add_droplet("web-2", "127.0.0.4", tags=["web", "canary"])

    assert [d.name for d in client.droplets.list(tag="web")] == ["web-1", "web-2"]
    assert "tag_name=web" in droplet_gets(emulator)[0]


def test_get_returns_the_droplet_with_its_addresses(client: po.Client, emulator: Emulator) -> None:
    data = emulator.add_droplet("web-1", "127.0.0.2", region="sfo3", private_ip_address="10.116.0.2")

    droplet = client.droplets.get(data["id"])

    assert (droplet.id, droplet.name, droplet.region) == (data["id"], "web-1", "sfo3")
    assert (droplet.ip_address, droplet.private_ip_address) == ("127.0.0.2", "10.116.0.2")
    assert droplet.memory == 1024


def test_by_name_returns_the_droplet_with_exactly_that_name(client: po.Client, emulator: Emulator) -> None:
    emulator.add_droplet("Web-1", "127.0.0.2")
    wanted = emulator.add_droplet("web-1", "127.0.0.3")
    emulator.add_droplet("web-10", "127.0.0.4")

    droplet = client.droplets.by_name("web-1")

    assert droplet.id == wanted["id"]
    assert droplet_gets(emulator) == [
        "/v2/droplets?per_page=200&name=web-1",
        "/v2/droplets?per_page=200&name=web-1&type=gpus",
    ]


def test_by_name_finds_a_gpu_droplet_the_default_name_filter_leaves_out(client: po.Client, emulator: Emulator) -> None:
    wanted = emulator.add_droplet("trainer-1", "127.0.0.2", size="gpu-h100x1-80gb")

    droplet = client.droplets.by_name("trainer-1")

    assert droplet.id == wanted["id"]
    assert droplet.gpu_info["model"] == "nvidia_h100"


def test_by_name_with_a_gpu_and_a_plain_droplet_of_one_name_lists_both(client: po.Client, emulator: Emulator) -> None:
    plain = emulator.add_droplet("web-1", "127.0.0.2")
    gpu = emulator.add_droplet("web-1", "127.0.0.3", size="gpu-h100x1-80gb", region="tor1")

    with pytest.raises(ResolveError) as raised:
        client.droplets.by_name("web-1")

    assert f"id {plain['id']} in nyc3 at 127.0.0.2" in str(raised.value)
    assert f"id {gpu['id']} in tor1 at 127.0.0.3" in str(raised.value)


def test_by_name_without_a_match_raises_resolve_error_naming_it(client: po.Client, emulator: Emulator) -> None:
    emulator.add_droplet("web-10", "127.0.0.2")
    with pytest.raises(ResolveError, match=r"^no droplet named 'web-1'$"):
        client.droplets.by_name("web-1")


def test_by_name_mentions_names_that_differ_only_in_case(client: po.Client, emulator: Emulator) -> None:
    emulator.add_droplet("Web-1", "127.0.0.2")
    with pytest.raises(ResolveError, match=r"no droplet named 'web-1' \(names differ in case only: 'Web-1'\)"):
        client.droplets.by_name("web-1")


def test_by_name_with_duplicates_lists_every_candidate(client: po.Client, emulator: Emulator) -> None:
    first = emulator.add_droplet("web-1", "127.0.0.2", region="nyc3")
    second = emulator.add_droplet("web-1", "127.0.0.3", region="ams3")

    with pytest.raises(ResolveError) as raised:
        client.droplets.by_name("web-1")

    message = str(raised.value)
    assert message.startswith("2 droplets are named 'web-1'")
    assert f"id {first['id']} in nyc3 at 127.0.0.2" in message
    assert f"id {second['id']} in ams3 at 127.0.0.3" in message


# -- keys and account ---------------------------------------------------------------


def test_keys_lists_the_accounts_ssh_keys(client: po.Client, emulator: Emulator) -> None:
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32))
    emulator.add_ssh_key("laptop", f"ssh-ed25519 {base64.b64encode(blob).decode()} me@laptop")

    keys = client.keys.list()

    assert [k["name"] for k in keys] == ["sandbox", "laptop"]
    assert all({"id", "fingerprint", "public_key"} <= set(k) for k in keys)


def test_account_returns_the_account_document(client: po.Client) -> None:
    assert client.account()["email"] == "sandbox@example.com"


# -- errors -------------------------------------------------------------------------


def test_an_unknown_droplet_raises_not_found_with_status_id_message_and_request_id(client: po.Client) -> None:
    with pytest.raises(NotFoundError) as raised:
        client.droplets.get(1)

    error = raised.value
    assert (error.status, error.id) == (404, "not_found")
    assert error.message == "The resource you requested could not be found."
    assert error.request_id and len(error.request_id) == 36  # the x-request-id header


def test_a_wrong_token_raises_authentication_error_that_never_shows_a_token(emulator: Emulator) -> None:
    wrong = "dop_v1_wrong_token_value"
    client = po.Client(wrong, api_url=emulator.url)

    with pytest.raises(AuthenticationError) as raised:
        client.droplets.list()

    error = raised.value
    assert (error.status, error.id, error.message) == (401, "unauthorized", "Unable to authenticate you.")
    for text in (str(error), repr(error), repr(client), str(error.args)):
        assert wrong not in text
        assert TOKEN not in text


def test_the_client_repr_hides_the_token(client: po.Client) -> None:
    assert TOKEN not in repr(client)
    assert "token=***" in repr(client)


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, ValidationError),
        (403, AuthenticationError),
        (409, APIError),
        (422, ValidationError),
        (429, RateLimitError),
        (503, ServerError),
    ],
)
def test_each_error_status_maps_to_its_exception(
    client: po.Client, emulator: Emulator, status: int, error_class: type[APIError]
) -> None:
    emulator.inject(status, 3)
    with pytest.raises(error_class) as raised:
        client.account()
    assert raised.value.status == status
    assert raised.value.id


def test_an_error_body_request_id_wins_over_the_header() -> None:
    session, _ = mounted(
        lambda request: (
            422,
            {"x-request-id": "from-header"},
            {"id": "unprocessable_entity", "message": "name is invalid", "request_id": "from-body"},
        )
    )
    client = po.Client(TOKEN, api_url="https://api.test", session=session)

    with pytest.raises(ValidationError) as raised:
        client.post("/v2/droplets", json={"name": "bad name"})

    assert raised.value.request_id == "from-body"
    assert str(raised.value) == "422 unprocessable_entity: name is invalid (request from-body)"


def test_an_error_that_is_not_json_still_raises_with_its_status(clock: FakeClock) -> None:
    session, _ = mounted(lambda request: (502, {}, b"<html><body>Bad Gateway</body></html>"))
    client = fake_timed(clock, "https://api.test", session=session)

    with pytest.raises(ServerError) as raised:
        client.get("/v2/account")

    assert raised.value.status == 502
    assert "Bad Gateway" in raised.value.message


# -- retries ------------------------------------------------------------------------


def test_a_rate_limited_get_waits_retry_after_then_succeeds(
    client: po.Client, emulator: Emulator, sleeps: list[float]
) -> None:
    emulator.add_droplet("web-1", "127.0.0.2")
    emulator.inject(429, 1, retry_after=2.5)

    assert [d.name for d in client.droplets.list()] == ["web-1"]
    assert sleeps == [2.5]
    assert droplet_gets(emulator)[:2] == ["/v2/droplets?per_page=200"] * 2


def test_a_rate_limit_wait_is_capped(client: po.Client, emulator: Emulator, sleeps: list[float]) -> None:
    emulator.inject(429, 1, retry_after=3600)
    client.account()
    assert sleeps == [60.0]


def test_without_retry_after_a_rate_limited_request_waits_until_ratelimit_reset(clock: FakeClock) -> None:
    replies = iter(
        [
            (429, {"ratelimit-reset": str(int(time.time()) + 5)}, {"id": "too_many_requests", "message": "slow"}),
            (200, {}, {"account": {"email": "a@example.com"}}),
        ]
    )
    session, _ = mounted(lambda request: next(replies))
    client = fake_timed(clock, "https://api.test", session=session)

    assert client.account() == {"email": "a@example.com"}
    assert len(clock.sleeps) == 1 and 3 < clock.sleeps[0] <= 5


def test_rate_limiting_that_persists_raises_rate_limit_error(
    client: po.Client, emulator: Emulator, sleeps: list[float]
) -> None:
    emulator.inject(429, 3, retry_after=1)
    with pytest.raises(RateLimitError) as raised:
        client.account()
    assert raised.value.id == "too_many_requests"
    assert sleeps == [1.0, 1.0]


def test_a_server_error_twice_then_success_is_retried_with_growing_backoff(
    client: po.Client, emulator: Emulator, sleeps: list[float]
) -> None:
    emulator.inject(503, 2)
    assert client.account()["status"] == "active"
    assert len(sleeps) == 2
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


def test_a_server_error_three_times_raises_server_error(
    client: po.Client, emulator: Emulator, sleeps: list[float]
) -> None:
    emulator.inject(500, 3)

    with pytest.raises(ServerError) as raised:
        client.droplets.list()

    assert (raised.value.status, raised.value.id) == (500, "server_error")
    assert len(droplet_gets(emulator)) == 3
    assert len(sleeps) == 2


def test_a_post_is_not_retried_on_a_server_error(client: po.Client, emulator: Emulator, sleeps: list[float]) -> None:
    emulator.inject(500, 3)
    with pytest.raises(ServerError):
        client.post("/v2/droplets", json={"name": "web-1"})
    assert emulator.request_log == [("POST", "/v2/droplets")]
    assert sleeps == []


def test_a_post_is_retried_on_rate_limiting(clock: FakeClock) -> None:
    replies = iter(
        [
            (429, {"Retry-After": "1"}, {"id": "too_many_requests", "message": "slow"}),
            (202, {}, {"droplet": droplet_data(7, "web-1")}),
        ]
    )
    session, transport = mounted(lambda request: next(replies))
    client = fake_timed(clock, "https://api.test", session=session)

    assert client.post("/v2/droplets", json={"name": "web-1"})["droplet"]["id"] == 7
    assert len(transport.sent) == 2 and clock.sleeps == [1.0]


def test_an_unreachable_api_raises_api_connection_error_after_retries(clock: FakeClock) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = fake_timed(clock, f"http://127.0.0.1:{port}", timeout=2)

    with pytest.raises(APIConnectionError) as raised:
        client.account()

    assert isinstance(raised.value.__cause__, requests.ConnectionError)
    assert f"127.0.0.1:{port}" in str(raised.value)
    assert TOKEN not in str(raised.value)
    assert len(clock.sleeps) == 2


def test_a_post_that_never_reached_the_api_is_sent_again(clock: FakeClock) -> None:
    received: list[tuple[str, str, Any]] = []

    class Listener(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.command, self.path, json.loads(body)))
            answer = json.dumps({"action": {"id": 9, "type": "reboot", "status": "in-progress"}}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    # Bound but not listening: a connection is refused, so nothing is sent; after two refusals it listens.
    server = http.server.HTTPServer(("127.0.0.1", 0), Listener, bind_and_activate=False)
    server.server_bind()
    listening = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 2:
            server.server_activate()
            listening.start()

    port = server.server_address[1]
    client = po.Client(TOKEN, api_url=f"http://127.0.0.1:{port}", sleep=sleep, clock=clock.time, timeout=2)
    try:
        answer = client.post("/v2/droplets/1/actions", json={"type": "reboot"})
    finally:
        if listening.is_alive():
            server.shutdown()
        server.server_close()

    # Connection refused twice: nothing was sent, so repeating cannot act twice. The third try arrives, once.
    assert answer["action"]["id"] == 9
    assert received == [("POST", "/v2/droplets/1/actions", {"type": "reboot"})]
    assert len(clock.sleeps) == 2


# -- the token goes to the configured host only ---------------------------------------


def test_a_next_link_naming_another_host_is_followed_on_the_base_url_only() -> None:
    def handler(request: Sent) -> Reply:
        page = request.query.get("page", "1")
        if page == "1":
            links = {"pages": {"next": "https://evil.example.com/v2/droplets?page=2&per_page=1"}}
            return 200, {}, {"droplets": [droplet_data(1, "a")], "links": links, "meta": {"total": 2}}
        return 200, {}, {"droplets": [droplet_data(2, "b")], "links": {}, "meta": {"total": 2}}

    session, transport = mounted(handler)
    client = po.Client(TOKEN, api_url="https://api.test", session=session)

    assert [d.name for d in client.droplets.list(tag="web")] == ["a", "b"]
    urls = [sent.url for sent in transport.sent]
    assert urls == [
        "https://api.test/v2/droplets?per_page=200&tag_name=web",
        "https://api.test/v2/droplets?page=2&per_page=1",
    ]


def test_a_redirect_is_not_followed() -> None:
    session, transport = mounted(lambda request: (302, {"Location": "https://evil.example.com/v2/account"}, b""))
    client = po.Client(TOKEN, api_url="https://api.test", session=session)

    with pytest.raises(APIError) as raised:
        client.account()

    assert raised.value.status == 302
    assert [sent.url for sent in transport.sent] == ["https://api.test/v2/account"]


def test_pagination_that_loops_back_stops_with_an_error() -> None:
    links = {"pages": {"next": "https://api.test/v2/droplets?page=2"}}
    session, _ = mounted(lambda request: (200, {}, {"droplets": [], "links": links, "meta": {"total": 0}}))
    client = po.Client(TOKEN, api_url="https://api.test", session=session)

    with pytest.raises(APIError, match="loops back"):
        client.droplets.list()


def test_every_request_carries_the_token_a_user_agent_and_a_timeout() -> None:
    session, transport = mounted(lambda request: (200, {}, {"account": {}}))
    client = po.Client(TOKEN, api_url="https://api.test", session=session, timeout=7)

    client.account()

    sent = transport.sent[0]
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["User-Agent"].startswith(f"poseidon/{po._version()} ")
    assert sent.timeout == 7
    assert "Authorization" not in session.headers


@pytest.mark.parametrize("token", ["abc\ndef", "abc def", "abc\u2019def"])
def test_a_malformed_token_is_refused_without_echoing_it(token: str) -> None:
    with pytest.raises(AuthenticationError) as raised:
        po.Client(token, api_url="https://api.test")
    assert "abc" not in str(raised.value)


# -- configuration --------------------------------------------------------------------


def configured(monkeypatch: pytest.MonkeyPatch, **variables: str) -> po.Client:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return po.connect()


def test_connect_prefers_the_token_argument_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", "from-environment")
    client = po.connect(token=TOKEN, api_url=emulator.url)
    assert client.account()["status"] == "active"


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"DIGITALOCEAN_TOKEN": "one", "DIGITALOCEAN_ACCESS_TOKEN": "two", "DIGITALOCEAN_API_KEY": "three"}, "one"),
        ({"DIGITALOCEAN_ACCESS_TOKEN": "two", "DIGITALOCEAN_API_KEY": "three"}, "two"),
        ({"DIGITALOCEAN_API_KEY": "three"}, "three"),
        ({"DIGITALOCEAN_TOKEN": "", "DIGITALOCEAN_API_KEY": "three"}, "three"),
    ],
)
def test_connect_reads_the_token_variables_in_order(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: str
) -> None:
    client = configured(monkeypatch, **variables)
    assert client._headers()["Authorization"] == f"Bearer {expected}"


def write_doctl_config(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config" / "doctl" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text)


def test_connect_falls_back_to_doctls_default_context(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_doctl_config(tmp_path, "access-token: from-doctl\ncontext: default\n")
    assert po.connect()._headers()["Authorization"] == "Bearer from-doctl"


def test_connect_uses_doctls_current_named_context(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_doctl_config(
        tmp_path,
        "access-token: default-token\nauth-contexts:\n  work: work-token\n  home: home-token\ncontext: work\n",
    )
    assert po.connect()._headers()["Authorization"] == "Bearer work-token"
    monkeypatch.setenv("DIGITALOCEAN_CONTEXT", "home")
    assert po.connect()._headers()["Authorization"] == "Bearer home-token"


def test_the_environment_wins_over_doctl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_doctl_config(tmp_path, "access-token: from-doctl\n")
    client = configured(monkeypatch, DIGITALOCEAN_API_KEY="from-environment")
    assert client._headers()["Authorization"] == "Bearer from-environment"


def test_connect_without_any_token_says_which_variables_to_set() -> None:
    with pytest.raises(AuthenticationError) as raised:
        po.connect()
    for name in ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_API_KEY", "doctl auth init"):
        assert name in str(raised.value)


def test_connect_takes_the_url_from_poseidon_api_url(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    client = configured(monkeypatch, DIGITALOCEAN_TOKEN=TOKEN, POSEIDON_API_URL=emulator.url + "/")
    assert client.api_url == emulator.url
    assert client.account()["status"] == "active"


def test_connect_defaults_to_the_public_api(monkeypatch: pytest.MonkeyPatch) -> None:
    assert configured(monkeypatch, DIGITALOCEAN_TOKEN=TOKEN).api_url == "https://api.digitalocean.com"


def test_a_malformed_api_url_is_refused() -> None:
    with pytest.raises(UsageError, match="must look like https://host"):
        po.connect(token=TOKEN, api_url="api.digitalocean.com")


@pytest.mark.parametrize(
    "url", ["http://user:hunter2@127.0.0.1:9/", "https://hunter2@api.example.com", "https://:hunter2@h/v2"]
)
def test_an_api_url_with_credentials_is_refused_without_showing_them(url: str) -> None:
    """requests would send them as Basic auth in place of the token, and print them in errors."""
    with pytest.raises(UsageError, match=r"must not hold a user or password \(https?://\*\*\*@") as caught:
        po.connect(token=TOKEN, api_url=url)
    assert "hunter2" not in str(caught.value) and "user" not in str(caught.value).split("(")[1]


def test_poseidon_with_credentials_in_its_api_url_is_exit_2_before_any_request(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from poseidon.cli import main

    monkeypatch.setenv("DIGITALOCEAN_TOKEN", TOKEN)
    monkeypatch.setenv("POSEIDON_API_URL", "http://user:hunter2@127.0.0.1:9/")
    assert main(["droplets"]) == 2
    captured = capsys.readouterr()
    assert "must not hold a user or password" in captured.err
    assert "hunter2" not in captured.out + captured.err


def test_the_public_names_of_the_module_are_pinned() -> None:
    assert sorted(po.__all__) == [
        "Actions",
        "Client",
        "DEFAULT_API_URL",
        "Domains",
        "Droplets",
        "Images",
        "Keys",
        "RateBudget",
        "Records",
        "Regions",
        "Sizes",
        "TOKEN_VARIABLES",
        "Tags",
        "WaitTimeoutError",
        "connect",
    ]
