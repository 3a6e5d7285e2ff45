"""poseidon.api under faults and load: timeouts, dropped connections, ambiguous creates, the request budget.

The emulator stages the faults (``inject``, ``slow``, ``drop``, optionally
after the request took effect); handler functions mounted as a transport
stage what it cannot. A fake clock stands in for time wherever the client
would wait, so the budget's pacing is asserted to the second without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

import poseidon.api as po
from poseidon.errors import APIConnectionError, AuthenticationError, NotFoundError, RateLimitError, ServerError
from poseidon.sandbox.emulator import Emulator
from support.fakeclock import FakeClock
from support.transport import Reply, Sent, Transport, mounted

TOKEN = "dop_v1_faults0123456789"
SIZE, IMAGE = "s-1vcpu-1gb", "ubuntu-24-04-x64"


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def emulator() -> Iterator[Emulator]:
    with Emulator(TOKEN) as emulator:
        yield emulator


#: The longest a held answer waits: reached only when a test failed before letting it go.
HOLD_AT_MOST = 60.0
#: The client's timeout where a held request must time out and the requests after it must be answered:
#: long enough for the in-process emulator's answers on a busy machine.
ANSWERED_WITHIN = 2.0


@pytest.fixture()
def gave_up(emulator: Emulator) -> Iterator[threading.Event]:
    """Set once the test has the client's outcome: the client has given up on every held answer.

    ``emulator.slow(HOLD_AT_MOST, until=gave_up)`` holds answers until then, so
    the client's timeout is the only clock that runs out; none races a delay.
    """
    event = threading.Event()
    yield event
    event.set()  # lets go of what is still held, whatever the test did


@pytest.fixture()
def client(emulator: Emulator, clock: FakeClock) -> Iterator[po.Client]:
    with po.Client(TOKEN, api_url=emulator.url, sleep=clock.sleep, clock=clock.time, timeout=5) as client:
        yield client


def sent(emulator: Emulator, method: str, path: str) -> int:
    return sum(1 for m, target in emulator.request_log if m == method and urlsplit(target).path == path)


def handled(clock: FakeClock, handler: Callable[[Sent], Reply], **options: Any) -> tuple[po.Client, Transport]:
    session, transport = mounted(handler)
    client = po.Client(
        TOKEN, api_url="https://api.test", session=session, sleep=clock.sleep, clock=clock.time, **options
    )
    return client, transport


def droplet_data(droplet_id: int, name: str, created_at: str, status: str = "active") -> dict[str, Any]:
    return {
        "id": droplet_id,
        "name": name,
        "status": status,
        "created_at": created_at,
        "tags": [],
        "region": {"slug": "nyc3"},
        "networks": {"v4": [{"ip_address": f"203.0.113.{droplet_id}", "type": "public"}], "v6": []},
    }


def now_stamp(clock: FakeClock) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock.now))


# -- reads under faults ------------------------------------------------------------------------


def test_a_read_that_times_out_is_sent_again_and_succeeds(
    emulator: Emulator, clock: FakeClock, gave_up: threading.Event
) -> None:
    emulator.add_droplet("web-1", "127.0.0.2")
    emulator.slow(HOLD_AT_MOST, 1, until=gave_up)
    client = po.Client(TOKEN, api_url=emulator.url, sleep=clock.sleep, clock=clock.time, timeout=ANSWERED_WITHIN)

    assert client.droplets.by_name("web-1").ip_address == "127.0.0.2"
    gave_up.set()
    assert sent(emulator, "GET", "/v2/droplets") == 3  # the held one, its repeat, the GPU listing
    assert len(clock.sleeps) == 1


def test_a_read_that_keeps_timing_out_raises_api_connection_error_naming_the_timeout(
    emulator: Emulator, clock: FakeClock, gave_up: threading.Event
) -> None:
    emulator.slow(HOLD_AT_MOST, 4, until=gave_up)  # one more than the client's attempts
    # Every request is held: a short timeout races no answer.
    client = po.Client(TOKEN, api_url=emulator.url, sleep=clock.sleep, clock=clock.time, timeout=0.2)

    with pytest.raises(APIConnectionError, match="ReadTimeout") as raised:
        client.account()
    gave_up.set()

    assert isinstance(raised.value.__cause__, requests.Timeout)
    assert TOKEN not in str(raised.value)
    assert sent(emulator, "GET", "/v2/account") == 3  # every attempt timed out, none was answered
    assert len(clock.sleeps) == 2


def test_a_dropped_connection_on_a_read_is_sent_again(client: po.Client, emulator: Emulator, clock: FakeClock) -> None:
    emulator.drop(1)
    assert client.account()["status"] == "active"
    assert sent(emulator, "GET", "/v2/account") == 2
    assert len(clock.sleeps) == 1


def test_a_server_error_twice_then_success_is_invisible_to_the_caller(
    client: po.Client, emulator: Emulator, clock: FakeClock
) -> None:
    emulator.add_droplet("web-1", "127.0.0.2")
    emulator.inject(500, 2, path="/v2/droplets")
    assert [d.name for d in client.droplets.list()] == ["web-1"]
    assert len(clock.sleeps) == 2


def test_a_rate_limited_read_waits_as_told_then_succeeds(
    client: po.Client, emulator: Emulator, clock: FakeClock
) -> None:
    emulator.inject(429, 1, retry_after=7)
    assert client.keys.list()[0]["name"] == "sandbox"
    assert clock.sleeps == [7.0]


def test_a_401_is_not_repeated(emulator: Emulator, clock: FakeClock) -> None:
    client = po.Client("dop_v1_revoked", api_url=emulator.url, sleep=clock.sleep, clock=clock.time)
    with pytest.raises(AuthenticationError) as raised:
        client.account()
    assert raised.value.status == 401
    assert sent(emulator, "GET", "/v2/account") == 1


def test_a_404_is_not_repeated(client: po.Client, emulator: Emulator) -> None:
    with pytest.raises(NotFoundError):
        client.images.get("windows-11")
    assert sent(emulator, "GET", "/v2/images/windows-11") == 1


def test_a_delete_whose_answer_was_lost_is_repeated_and_its_404_means_done(
    client: po.Client, emulator: Emulator
) -> None:
    droplet = emulator.add_droplet("web-1", "127.0.0.2")
    emulator.drop(1, method="DELETE", processed=True)

    client.droplets.delete(droplet["id"])

    assert sent(emulator, "DELETE", f"/v2/droplets/{droplet['id']}") == 2
    assert client.droplets.list() == []


def test_a_delete_of_something_that_never_existed_still_raises_not_found(client: po.Client) -> None:
    with pytest.raises(NotFoundError):
        client.droplets.delete(1)


# -- creates are never blindly repeated ------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(lambda e, _: e.inject(500, method="POST", processed=True), id="500 after creating"),
        pytest.param(lambda e, _: e.inject(503, method="POST", processed=True), id="503 after creating"),
        pytest.param(lambda e, _: e.drop(method="POST", processed=True), id="connection dropped after creating"),
        pytest.param(
            lambda e, until: e.slow(HOLD_AT_MOST, method="POST", until=until), id="answer later than the timeout"
        ),
    ],
)
def test_a_droplet_create_that_failed_after_creating_returns_the_droplet_instead_of_a_second(
    emulator: Emulator, clock: FakeClock, gave_up: threading.Event, fault: Callable[[Emulator, threading.Event], None]
) -> None:
    client = po.Client(TOKEN, api_url=emulator.url, sleep=clock.sleep, clock=clock.time, timeout=ANSWERED_WITHIN)
    fault(emulator, gave_up)

    droplet = client.droplets.create("web-1", region="nyc3", size=SIZE, image=IMAGE)
    gave_up.set()

    assert (droplet.name, droplet.status) == ("web-1", "active")
    assert sent(emulator, "POST", "/v2/droplets") == 1
    assert [d.id for d in client.droplets.list()] == [droplet.id]


def test_several_droplets_created_by_a_failed_request_are_all_found(client: po.Client, emulator: Emulator) -> None:
    emulator.inject(502, method="POST", processed=True)

    droplets = client.droplets.create(["web-1", "web-2"], region="nyc3", size=SIZE, image=IMAGE)

    assert [d.name for d in droplets] == ["web-1", "web-2"]
    assert sent(emulator, "POST", "/v2/droplets") == 1
    assert len(client.droplets.list()) == 2


def test_a_droplet_create_that_failed_before_creating_is_sent_again_once(client: po.Client, emulator: Emulator) -> None:
    emulator.inject(500, method="POST")

    droplet = client.droplets.create("web-1", region="nyc3", size=SIZE, image=IMAGE)

    assert sent(emulator, "POST", "/v2/droplets") == 2
    assert [d.id for d in client.droplets.list()] == [droplet.id]


def test_a_create_failing_every_time_raises_the_last_server_error(client: po.Client, emulator: Emulator) -> None:
    emulator.inject(500, 3, method="POST")

    with pytest.raises(ServerError):
        client.droplets.create("web-1", region="nyc3", size=SIZE, image=IMAGE)

    assert sent(emulator, "POST", "/v2/droplets") == 3
    assert client.droplets.list() == []


def test_an_older_droplet_with_the_name_is_not_taken_for_the_one_asked_for(clock: FakeClock) -> None:
    posts = []

    def handler(request: Sent) -> Reply:
        if request.method == "POST":
            posts.append(request.body)
            if len(posts) == 1:
                return 500, {}, {"id": "server_error", "message": "try again"}
            return 202, {}, {"droplet": droplet_data(2, "web-1", now_stamp(clock), "new"), "links": {}}
        if request.path == "/v2/droplets" and request.query.get("type") != "gpus":
            # A droplet named web-1 made last year: not the one this create asked for.
            return (
                200,
                {},
                {"droplets": [droplet_data(1, "web-1", "2024-01-01T00:00:00Z")], "links": {}, "meta": {"total": 1}},
            )
        return 200, {}, {"droplets": [], "links": {}, "meta": {"total": 0}}

    client, _ = handled(clock, handler)

    droplet = client.droplets.create("web-1", region="nyc3", size=SIZE, image=IMAGE, wait=False)

    assert droplet.id == 2
    assert len(posts) == 2


def test_after_a_failure_that_made_some_droplets_only_the_missing_names_are_sent_again(clock: FakeClock) -> None:
    posts: list[Any] = []

    def handler(request: Sent) -> Reply:
        if request.method == "POST":
            posts.append(request.body)
            if len(posts) == 1:
                return 504, {}, {"id": "gateway_timeout", "message": "late"}
            return 202, {}, {"droplet": droplet_data(8, request.body["name"], now_stamp(clock), "new"), "links": {}}
        found = (
            [droplet_data(7, "web-1", now_stamp(clock), "new")]
            if request.query == {"per_page": "200", "name": "web-1"}
            else []
        )
        return 200, {}, {"droplets": found, "links": {}, "meta": {"total": len(found)}}

    client, _ = handled(clock, handler)

    droplets = client.droplets.create(["web-1", "web-2"], region="nyc3", size=SIZE, image=IMAGE, wait=False)

    assert [(d.id, d.name) for d in droplets] == [(7, "web-1"), (8, "web-2")]
    assert [p.get("names") or p.get("name") for p in posts] == [["web-1", "web-2"], "web-2"]


def test_an_action_that_failed_after_starting_is_not_started_twice(client: po.Client, emulator: Emulator) -> None:
    droplet = client.droplets.create("web-1", region="nyc3", size=SIZE, image=IMAGE)
    emulator.inject(500, method="POST", path=f"/v2/droplets/{droplet.id}/actions", processed=True)

    action = droplet.snapshot("nightly")

    assert (action["type"], action["status"]) == ("snapshot", "completed")
    assert [a["type"] for a in droplet.actions()] == ["create", "snapshot"]
    assert len(droplet.snapshots()) == 1


def test_an_action_that_failed_before_starting_is_sent_again(client: po.Client, emulator: Emulator) -> None:
    droplet = client.droplets.create("web-1", region="nyc3", size=SIZE, image=IMAGE)
    emulator.drop(method="POST", path=f"/v2/droplets/{droplet.id}/actions")

    droplet.power_off()

    assert [a["type"] for a in droplet.actions()] == ["create", "power_off"]
    assert droplet.refresh().status == "off"


def test_a_key_whose_create_answer_was_lost_is_found_by_its_fingerprint(client: po.Client, emulator: Emulator) -> None:
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBDd5v9aiy0cBh2R0g3pbs4UKZKmPm8fF0mDV4Nrqsyh me@laptop"
    emulator.drop(method="POST", path="/v2/account/keys", processed=True)

    key = client.keys.create("laptop", line)

    assert (key["name"], key["public_key"]) == ("laptop", line)
    assert [k["name"] for k in client.keys.list()] == ["sandbox", "laptop"]
    assert sent(emulator, "POST", "/v2/account/keys") == 1


def test_a_domain_and_a_record_whose_answers_were_lost_are_found_not_added_twice(
    client: po.Client, emulator: Emulator
) -> None:
    emulator.inject(500, method="POST", path="/v2/domains", processed=True)
    assert client.domains.create("example.com", ip_address="203.0.113.5")["name"] == "example.com"

    emulator.inject(500, method="POST", path="/v2/domains/example.com/records", processed=True)
    record = client.domains.records("example.com").create("A", "www", "203.0.113.5")

    assert record["name"] == "www"
    assert [r["name"] for r in client.domains.records("example.com").list(type="A")] == ["@", "www"]


# -- the request budget ----------------------------------------------------------------------------------


def budget_handler(clock: FakeClock, remaining: list[int], reset_in: float, limit: int = 100) -> Callable[..., Reply]:
    """Answers whose ratelimit headers count down ``remaining``; a request past the limit gets 429."""
    reset = clock.now + reset_in

    def handler(request: Sent) -> Reply:
        headers = {"ratelimit-limit": str(limit), "ratelimit-reset": str(int(reset))}
        if not remaining or remaining[0] < 0:
            return 429, {**headers, "ratelimit-remaining": "0"}, {"id": "too_many_requests", "message": "slow down"}
        headers["ratelimit-remaining"] = str(remaining.pop(0))
        return 200, headers, {"account": {"status": "active"}}

    return handler


def test_the_client_does_not_slow_down_while_the_budget_is_plentiful(clock: FakeClock) -> None:
    client, transport = handled(clock, budget_handler(clock, list(range(99, 79, -1)), reset_in=60))
    for _ in range(20):
        client.account()
    assert clock.sleeps == []


def test_the_client_spreads_its_last_requests_until_the_reset_instead_of_meeting_a_429(clock: FakeClock) -> None:
    # 10 of 100 left (the reserve is a tenth), the oldest request expires in 60 s.
    clock.now = float(int(clock.now))
    client, transport = handled(clock, budget_handler(clock, list(range(10, 0, -1)), reset_in=60))

    for _ in range(6):
        client.account()

    # Once an answer shows the budget low, requests are spaced by an equal
    # share of what is left until the reset: 60 s / 10 left, 54 s / 9 left...
    assert clock.sleeps == pytest.approx([6.0] * 4)
    assert len(transport.sent) == 6  # no 429 was answered, none repeated


def test_with_nothing_left_the_client_waits_for_the_reset_before_sending(clock: FakeClock) -> None:
    client, transport = handled(clock, budget_handler(clock, [0, 4999], reset_in=30, limit=5000))

    client.account()
    client.account()

    assert clock.sleeps == pytest.approx([30.0], abs=1)
    assert len(transport.sent) == 2


def test_the_client_slows_down_before_the_emulator_would_refuse(clock: FakeClock) -> None:
    with Emulator(TOKEN, per_hour=40) as emulator:
        client = po.Client(TOKEN, api_url=emulator.url, sleep=clock.sleep, clock=clock.time)
        for _ in range(40):
            client.account()

    # From the answer that left 4 (a tenth of 40), the rest of the hour is
    # shared among the last requests, each wait capped at max_wait.
    assert clock.sleeps == [60.0, 60.0, 60.0]
    # A 429 would have been waited out and repeated: one request per call means none came.
    assert len(emulator.request_log) == 40


def test_never_more_than_250_requests_start_in_a_minute(clock: FakeClock) -> None:
    budget = po.RateBudget(clock=clock.time, sleep=clock.sleep)
    for _ in range(251):
        budget.acquire()
    assert clock.sleeps == [60.0]


def test_threads_share_one_budget_and_never_overspend_the_minute() -> None:
    start = time.time()
    waits: list[float] = []
    lock = threading.Lock()

    def record(seconds: float) -> None:
        with lock:
            waits.append(seconds)

    # The clock stands still: each wait is exactly how far in the future a request was scheduled.
    budget = po.RateBudget(per_minute=50, clock=lambda: start, sleep=record)
    threads = [threading.Thread(target=lambda: [budget.acquire() for _ in range(25)]) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    schedule = sorted([0.0] * (200 - len(waits)) + waits)
    assert all(schedule[i + 50] - schedule[i] >= 60 for i in range(len(schedule) - 50))
    assert schedule[-1] == 180.0


def test_a_429_holds_every_thread_of_the_client(clock: FakeClock) -> None:
    budget = po.RateBudget(clock=clock.time, sleep=clock.sleep)
    budget.pause(12)
    budget.acquire()
    budget.acquire()
    assert clock.sleeps == [12.0]


def test_a_429_after_all_attempts_raises_rate_limit_error_and_waits_are_bounded(clock: FakeClock) -> None:
    def handler(request: Sent) -> Reply:
        return 429, {"Retry-After": "7200"}, {"id": "too_many_requests", "message": "slow down"}

    client, transport = handled(clock, handler, max_wait=30)

    with pytest.raises(RateLimitError):
        client.account()

    assert clock.sleeps == [30.0, 30.0]
    assert len(transport.sent) == 3
