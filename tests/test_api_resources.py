"""Every collection of poseidon.api against the emulator: what each call changes or returns.

A fake clock stands in for time, so waiting for a droplet or an action costs
no real seconds; the emulator moves a droplet from ``new`` to ``active`` (and
an action from ``in-progress`` to ``completed``) after ``pending_reads``
answers.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import poseidon.api as po
from poseidon.droplet import Droplet
from poseidon.errors import APIError, NotFoundError, ResolveError, UsageError, ValidationError
from poseidon.sandbox.emulator import Emulator
from support.fakeclock import FakeClock
from support.transport import Reply, Sent, mounted

TOKEN = "dop_v1_resources0123456789"
SIZE, IMAGE = "s-1vcpu-1gb", "ubuntu-24-04-x64"


def public_key(comment: str) -> str:
    algorithm = b"ssh-ed25519"
    point = hashlib.sha256(comment.encode()).digest()
    blob = len(algorithm).to_bytes(4, "big") + algorithm + len(point).to_bytes(4, "big") + point
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def emulator() -> Iterator[Emulator]:
    with Emulator(TOKEN) as emulator:
        yield emulator


@pytest.fixture()
def client(emulator: Emulator, clock: FakeClock) -> Iterator[po.Client]:
    with po.Client(TOKEN, api_url=emulator.url, sleep=clock.sleep, clock=clock.time) as client:
        yield client


def requests_to(emulator: Emulator, method: str, prefix: str) -> list[str]:
    return [target for m, target in emulator.request_log if m == method and target.startswith(prefix)]


@pytest.fixture()
def web(client: po.Client) -> Droplet:
    return client.droplets.create("web-1", region="nyc3", size=SIZE, image=IMAGE, tags=["web"])


# -- creating and deleting droplets ------------------------------------------------------------


def test_create_waits_until_the_droplet_is_active_with_a_public_ipv4(clock: FakeClock) -> None:
    with Emulator(TOKEN, pending_reads=3) as emulator:
        client = po.Client(TOKEN, api_url=emulator.url, sleep=clock.sleep, clock=clock.time, poll_interval=5)

        droplet = client.droplets.create("web-1", region="fra1", size=SIZE, image=IMAGE)

        assert (droplet.name, droplet.status, droplet.region) == ("web-1", "active", "fra1")
        assert droplet.ip_address == "203.0.113.2"
        assert droplet.private_ip_address and droplet.private_ip_address.startswith("10.")
        gets = requests_to(emulator, "GET", f"/v2/droplets/{droplet.id}")
        assert len(gets) == 4  # three answers still show it new, the fourth active
        assert clock.sleeps == [5.0] * 4


def test_create_without_waiting_returns_the_new_droplet_before_it_has_addresses(
    client: po.Client, emulator: Emulator
) -> None:
    droplet = client.droplets.create("web-1", region="nyc3", size=SIZE, image=IMAGE, wait=False)

    assert (droplet.status, droplet.ip_address) == ("new", None)
    assert emulator.request_log == [("POST", "/v2/droplets")]


def test_create_sends_every_option_and_the_droplet_carries_them(client: po.Client, emulator: Emulator) -> None:
    key = client.keys.create("laptop", public_key("me@laptop"))

    droplet = client.droplets.create(
        "web-1",
        region="ams3",
        size="s-2vcpu-4gb",
        image="debian-12-x64",
        ssh_keys=["laptop"],
        tags=["web", "env:prod"],
        user_data="#cloud-config\n",
        ipv6=True,
        monitoring=True,
        backups=True,
        vpc_uuid="5a4981aa-9653-4bd1-bef5-d6bff52042e4",
    )

    assert (droplet.size_slug, droplet.image["slug"], droplet.tags) == (
        "s-2vcpu-4gb",
        "debian-12-x64",
        ["web", "env:prod"],
    )
    assert {"ipv6", "monitoring", "backups"} <= set(droplet.features)
    assert droplet.ipv6_address and droplet.ipv6_address.startswith("2001:db8:")
    assert droplet.vpc_uuid == "5a4981aa-9653-4bd1-bef5-d6bff52042e4"
    assert droplet.next_backup_window is not None
    assert key["id"] in [k["id"] for k in client.keys.list()]


def test_create_with_a_list_of_names_makes_them_in_one_request_and_returns_them_in_order(
    client: po.Client, emulator: Emulator
) -> None:
    droplets = client.droplets.create(["web-2", "web-1", "web-3"], region="nyc3", size=SIZE, image=IMAGE)

    assert [d.name for d in droplets] == ["web-2", "web-1", "web-3"]
    assert all(d.status == "active" and d.ip_address for d in droplets)
    assert len({d.ip_address for d in droplets}) == 3
    assert requests_to(emulator, "POST", "/v2/droplets") == ["/v2/droplets"]


def test_create_with_more_than_ten_names_sends_batches_the_api_accepts(client: po.Client, emulator: Emulator) -> None:
    names = [f"node-{n:02}" for n in range(12)]

    droplets = client.droplets.create(names, region="nyc3", size=SIZE, image=IMAGE, wait=False)

    assert [d.name for d in droplets] == names
    assert requests_to(emulator, "POST", "/v2/droplets") == ["/v2/droplets", "/v2/droplets"]


def test_create_gives_each_droplet_the_address_the_sandbox_hook_returns(clock: FakeClock) -> None:
    asked: list[list[str]] = []

    def on_create(names: list[str]) -> list[str | None]:
        asked.append(names)
        return ["127.0.0.9" if name == "web-1" else None for name in names]

    with Emulator(TOKEN, on_create) as emulator:
        client = po.Client(TOKEN, api_url=emulator.url, sleep=clock.sleep, clock=clock.time)
        droplets = client.droplets.create(["web-1", "web-2"], region="nyc3", size=SIZE, image=IMAGE)

    assert asked == [["web-1", "web-2"]], "one call for the whole request"
    assert [d.ip_address for d in droplets] == ["127.0.0.9", "203.0.113.2"]


def test_create_resolves_ssh_key_names_and_refuses_an_unknown_one_before_sending(
    client: po.Client, emulator: Emulator
) -> None:
    with pytest.raises(ResolveError, match="no SSH key is named 'nobody'"):
        client.droplets.create("web-1", region="nyc3", size=SIZE, image=IMAGE, ssh_keys=["nobody"])
    assert requests_to(emulator, "POST", "/") == []


def test_create_that_the_api_refuses_raises_validation_error_with_its_message(client: po.Client) -> None:
    with pytest.raises(ValidationError, match="invalid size") as raised:
        client.droplets.create("web-1", region="nyc3", size="s-64vcpu-1tb", image=IMAGE)
    assert raised.value.status == 422


def test_create_that_never_becomes_active_times_out_naming_the_droplet(clock: FakeClock) -> None:
    with Emulator(TOKEN, pending_reads=1000) as emulator:
        client = po.Client(TOKEN, api_url=emulator.url, sleep=clock.sleep, clock=clock.time, poll_interval=4)

        with pytest.raises(po.WaitTimeoutError, match=r"after 10 s: web-1 \(\d+\) is new") as raised:
            client.droplets.create("web-1", region="nyc3", size=SIZE, image=IMAGE, timeout=10)

    assert isinstance(raised.value, TimeoutError)
    assert clock.sleeps == [4.0, 4.0, 2.0]


def test_delete_destroys_the_droplet_which_shows_off_by_id_for_a_moment(client: po.Client, web: Droplet) -> None:
    client.droplets.delete(web.id)
    assert client.droplets.list() == []  # never listed again
    assert client.droplets.get(web.id).status == "off"  # the moment deletion takes (pending_reads)
    with pytest.raises(NotFoundError):
        client.droplets.get(web.id)


def test_deleting_a_droplet_object_destroys_it(client: po.Client, web: Droplet) -> None:
    web.delete()
    assert client.droplets.list() == []


def test_delete_by_tag_destroys_only_the_droplets_carrying_it(client: po.Client, emulator: Emulator) -> None:
    client.droplets.create(["web-1", "web-2"], region="nyc3", size=SIZE, image=IMAGE, tags=["web"], wait=False)
    client.droplets.create("db-1", region="nyc3", size=SIZE, image=IMAGE, tags=["db"], wait=False)

    client.droplets.delete_by_tag("web")

    assert [d.name for d in client.droplets.list()] == ["db-1"]
    assert requests_to(emulator, "DELETE", "/v2/droplets") == ["/v2/droplets?tag_name=web"]


def test_a_droplet_built_without_a_client_cannot_act() -> None:
    with pytest.raises(UsageError, match="without a client"):
        Droplet({"id": 1, "name": "web-1"}).reboot()


# -- a droplet's kernels, snapshots, backups and actions --------------------------------------------


def test_kernels_lists_the_kernels_the_droplet_may_boot(client: po.Client, web: Droplet) -> None:
    kernels = client.droplets.kernels(web.id)
    assert len(kernels) == 3
    assert all({"id", "name", "version"} == set(k) for k in kernels)
    assert web.kernels() == kernels


def test_snapshots_lists_the_snapshot_the_droplet_took(client: po.Client, web: Droplet) -> None:
    assert client.droplets.snapshots(web.id) == []
    web.snapshot("before-upgrade")

    (snapshot,) = client.droplets.snapshots(web.id)

    assert (snapshot["name"], snapshot["type"], snapshot["regions"]) == ("before-upgrade", "snapshot", ["nyc3"])
    assert web.refresh().snapshot_ids == [snapshot["id"]]


def test_backups_lists_the_droplets_backups(client: po.Client, emulator: Emulator, web: Droplet) -> None:
    backup = emulator.add_backup(web.id, "nightly")

    backups = client.droplets.backups(web.id)

    assert [(b["id"], b["name"], b["type"]) for b in backups] == [(backup["id"], "nightly", "backup")]
    assert web.backups() == backups


def test_actions_lists_the_creation_and_every_later_action(client: po.Client, web: Droplet) -> None:
    web.reboot()
    web.power_off()

    actions = client.droplets.actions(web.id)

    assert [(a["type"], a["status"]) for a in actions] == [
        ("create", "completed"),
        ("reboot", "completed"),
        ("power_off", "completed"),
    ]
    assert {a["resource_id"] for a in actions} == {web.id}


# -- droplet actions --------------------------------------------------------------------------------


def _active(droplet: Droplet) -> bool:
    return droplet.status == "active"


def _off(droplet: Droplet) -> bool:
    return droplet.status == "off"


STATE_CHANGES: list[tuple[str, str | None, Callable[[Droplet], Any]]] = [
    ("power_cycle", "power_off", _active),  # like booting from scratch: an off droplet comes back on
    ("shutdown", None, _off),
    ("power_off", None, _off),
    ("power_on", "power_off", _active),
    ("enable_ipv6", None, lambda d: "ipv6" in d.features and d.ipv6_address),
    ("enable_backups", None, lambda d: "backups" in d.features and d.next_backup_window),
    ("disable_backups", "enable_backups", lambda d: "backups" not in d.features and d.next_backup_window is None),
]


@pytest.mark.parametrize(("action", "first", "effect"), STATE_CHANGES, ids=[action for action, _, _ in STATE_CHANGES])
def test_each_plain_action_waits_for_completion_and_changes_the_droplets_state(
    client: po.Client,
    emulator: Emulator,
    web: Droplet,
    action: str,
    first: str | None,
    effect: Callable[[Droplet], Any],
) -> None:
    if first is not None:
        getattr(web, first)()
    assert not effect(web.refresh())  # the state the action makes does not hold yet

    result = getattr(web, action)()

    assert (result["type"], result["status"], result["resource_id"]) == (action, "completed", web.id)
    assert result["completed_at"] is not None
    assert effect(web.refresh())
    assert requests_to(emulator, "GET", f"/v2/actions/{result['id']}")  # it was polled


@pytest.mark.parametrize("action", ["reboot", "power_cycle"])
def test_reboot_and_power_cycle_restart_the_machine_and_leave_the_droplet_active(clock: FakeClock, action: str) -> None:
    restarted: list[tuple[str | None, str]] = []  # what the sandbox does to the droplet's SSH endpoint
    with (
        Emulator(TOKEN, on_power=lambda address, kind: restarted.append((address, kind))) as emulator,
        po.Client(TOKEN, api_url=emulator.url, sleep=clock.sleep, clock=clock.time) as client,
    ):
        web = client.droplets.create("web-1", region="nyc3", size=SIZE, image=IMAGE)

        result = getattr(web, action)()

        assert (result["type"], result["status"], result["resource_id"]) == (action, "completed", web.id)
        assert restarted == [(web.ip_address, action)]
        assert web.refresh().status == "active"


def test_password_reset_mails_the_account_a_new_root_password(
    client: po.Client, emulator: Emulator, web: Droplet
) -> None:
    assert emulator.mail == []

    result = web.password_reset()
    web.password_reset()

    assert (result["type"], result["status"], result["resource_id"]) == ("password_reset", "completed", web.id)
    first, second = emulator.mail
    assert first["to"] == second["to"] == client.account()["email"]
    assert first["droplet_id"] == second["droplet_id"] == web.id
    assert first["root_password"] and first["root_password"] != second["root_password"]


def test_enable_private_networking_gives_an_old_droplet_a_private_address(
    client: po.Client, emulator: Emulator
) -> None:
    emulator.add_droplet("legacy", "127.0.0.2")
    legacy = client.droplets.by_name("legacy")
    assert legacy.private_ip_address is None

    assert legacy.enable_private_networking()["status"] == "completed"

    assert legacy.refresh().private_ip_address is not None


def test_resize_moves_the_droplet_to_the_new_size_and_grows_the_disk_when_asked(web: Droplet) -> None:
    web.resize("s-2vcpu-4gb")
    assert (web.refresh().size_slug, web.memory, web.disk) == ("s-2vcpu-4gb", 4096, 25)

    web.resize("s-4vcpu-8gb", disk=True)
    assert (web.refresh().size_slug, web.disk) == ("s-4vcpu-8gb", 160)


def test_restore_takes_the_id_of_one_of_the_droplets_backups_or_snapshots(client: po.Client, web: Droplet) -> None:
    web.snapshot("good")
    snapshot = client.droplets.snapshots(web.id)[0]

    action = web.restore(snapshot["id"])

    assert (action["type"], action["status"]) == ("restore", "completed")
    with pytest.raises(ValidationError, match="backup or snapshot of this droplet"):
        web.restore(123)


def test_rebuild_reinstalls_from_another_image(web: Droplet) -> None:
    web.rebuild("fedora-40-x64")
    assert web.refresh().image["distribution"] == "Fedora"


def test_rename_renames_the_droplet(client: po.Client, web: Droplet) -> None:
    web.rename("web-one")
    assert client.droplets.by_name("web-one").id == web.id


def test_change_kernel_boots_the_chosen_kernel(web: Droplet) -> None:
    kernel = web.kernels()[1]
    web.change_kernel(kernel["id"])
    assert web.refresh().kernel == kernel


def test_an_action_without_waiting_returns_it_in_progress_and_actions_wait_completes_it(
    client: po.Client, emulator: Emulator, web: Droplet
) -> None:
    started = web.reboot(wait=False)
    assert started["status"] == "in-progress"
    assert requests_to(emulator, "GET", "/v2/actions/") == []

    assert client.actions.get(started["id"])["status"] == "in-progress"
    done = client.actions.wait(started["id"])

    assert (done["id"], done["status"]) == (started["id"], "completed")


def test_an_action_that_does_not_complete_in_time_raises_wait_timeout_error(clock: FakeClock) -> None:
    with Emulator(TOKEN, pending_reads=1000) as emulator:
        emulator.add_droplet("web-1", "127.0.0.2")
        client = po.Client(TOKEN, api_url=emulator.url, sleep=clock.sleep, clock=clock.time, poll_interval=2)
        droplet = client.droplets.by_name("web-1")

        with pytest.raises(po.WaitTimeoutError, match=r"\(reboot on droplet \d+\) still in-progress after 5 s"):
            droplet.reboot(timeout=5)

    assert clock.sleeps == [2.0, 2.0, 1.0]


def test_an_action_that_errors_raises_api_error(clock: FakeClock) -> None:
    action = {"id": 9, "status": "in-progress", "type": "reboot", "resource_id": 1, "resource_type": "droplet"}

    def handler(request: Sent) -> Reply:
        if request.method == "POST":
            return 201, {}, {"action": action}
        return 200, {}, {"action": {**action, "status": "errored"}}

    session, _ = mounted(handler)
    client = po.Client(TOKEN, api_url="https://api.test", session=session, sleep=clock.sleep, clock=clock.time)

    with pytest.raises(APIError, match=r"action 9 \(reboot on droplet 1\) errored"):
        client.droplets.act(1, "reboot")


def test_an_action_the_api_refuses_raises_validation_error(web: Droplet) -> None:
    with pytest.raises(ValidationError, match="valid size slug"):
        web.resize("s-64vcpu-1tb")


# -- keys -------------------------------------------------------------------------------------------


def test_keys_are_created_read_by_id_or_fingerprint_found_by_name_and_deleted(client: po.Client) -> None:
    created = client.keys.create("laptop", public_key("me@laptop"))

    assert created["fingerprint"].count(":") == 15
    assert client.keys.get(created["id"]) == created
    assert client.keys.get(created["fingerprint"]) == created
    assert client.keys.by_name("laptop") == created

    client.keys.delete(created["fingerprint"])
    assert [k["name"] for k in client.keys.list()] == ["sandbox"]
    with pytest.raises(NotFoundError):
        client.keys.get(created["id"])


def test_a_key_already_on_the_account_is_refused(client: po.Client) -> None:
    client.keys.create("laptop", public_key("me@laptop"))
    with pytest.raises(ValidationError, match="already in use"):
        client.keys.create("laptop again", public_key("me@laptop"))


def test_keys_by_name_refuses_a_missing_or_shared_name(client: po.Client) -> None:
    first = client.keys.create("shared", public_key("one"))
    second = client.keys.create("shared", public_key("two"))

    with pytest.raises(ResolveError, match="no SSH key named 'laptop'"):
        client.keys.by_name("laptop")
    with pytest.raises(ResolveError, match=f"2 SSH keys are named 'shared' \\(ids {first['id']}, {second['id']}\\)"):
        client.keys.by_name("shared")


# -- images, regions, sizes, account --------------------------------------------------------------


def test_images_are_listed_by_type_and_read_by_slug_or_id(client: po.Client, web: Droplet) -> None:
    everything = client.images.list()
    distributions = client.images.list(type="distribution")
    applications = client.images.list(type="application")

    assert {i["slug"] for i in distributions} >= {"ubuntu-24-04-x64", "debian-12-x64"}
    assert {i["slug"] for i in applications} == {"docker-20-04", "wordpress-22-04"}
    assert len(everything) == len(distributions) + len(applications)
    ubuntu = client.images.get("ubuntu-24-04-x64")
    assert client.images.get(ubuntu["id"]) == ubuntu
    with pytest.raises(NotFoundError):
        client.images.get("windows-11")
    with pytest.raises(ValidationError, match="'distribution' or 'application'"):
        client.images.list(type="snapshot")


def test_private_images_are_the_accounts_own_snapshots(client: po.Client, web: Droplet) -> None:
    assert client.images.list(private=True) == []
    web.snapshot("golden")

    (image,) = client.images.list(private=True)

    assert (image["name"], image["type"], image["public"], image["slug"]) == ("golden", "snapshot", False, None)


def test_regions_and_sizes_list_what_droplets_can_be_made_with(client: po.Client) -> None:
    regions = {r["slug"]: r for r in client.regions.list()}
    sizes = {s["slug"]: s for s in client.sizes.list()}

    assert regions["nyc3"]["name"] == "New York 3" and regions["nyc3"]["available"]
    assert SIZE in regions["nyc3"]["sizes"]
    assert (sizes[SIZE]["memory"], sizes[SIZE]["vcpus"], sizes[SIZE]["price_monthly"]) == (1024, 1, 6.0)
    assert sizes["gpu-h100x1-80gb"]["gpu_info"]["count"] == 1


def test_account_returns_the_accounts_limits(client: po.Client) -> None:
    account = client.account()
    assert (account["status"], account["droplet_limit"]) == ("active", 25)


# -- tags ---------------------------------------------------------------------------------------------


def test_tags_are_created_put_on_droplets_and_images_counted_and_taken_off(
    client: po.Client, emulator: Emulator, web: Droplet
) -> None:
    other = client.droplets.create("web-2", region="nyc3", size=SIZE, image=IMAGE)
    web.snapshot("golden")
    image_id = client.images.list(private=True)[0]["id"]

    assert client.tags.create("env:prod") == {"name": "env:prod", "resources": {"count": 0, "droplets": {"count": 0}}}
    client.tags.tag("env:prod", [web, other, ("image", image_id)])

    tag = client.tags.get("env:prod")
    assert (tag["resources"]["count"], tag["resources"]["droplets"]["count"]) == (3, 2)
    assert [d.name for d in client.droplets.list(tag="env:prod")] == ["web-1", "web-2"]
    assert "env:prod" in client.images.get(image_id)["tags"]

    client.tags.untag("env:prod", [other])
    assert [d.name for d in client.droplets.list(tag="env:prod")] == ["web-1"]


def test_tags_list_includes_tags_given_at_creation(client: po.Client, web: Droplet) -> None:
    assert [t["name"] for t in client.tags.list()] == ["web"]
    assert client.tags.get("web")["resources"]["droplets"]["count"] == 1


def test_deleting_a_tag_takes_it_off_everything(client: po.Client, web: Droplet) -> None:
    client.tags.delete("web")

    assert web.refresh().tags == []
    with pytest.raises(NotFoundError):
        client.tags.get("web")


def test_tagging_with_a_tag_that_does_not_exist_raises_not_found(client: po.Client, web: Droplet) -> None:
    with pytest.raises(NotFoundError):
        client.tags.tag("nope", [web])


def test_tagging_needs_at_least_one_resource(client: po.Client) -> None:
    with pytest.raises(ValidationError, match="at least one resource"):
        client.tags.tag("web", [])


# -- domains and records -----------------------------------------------------------------------------


def test_the_original_deploy_script_flow_a_droplet_a_domain_and_an_a_record(client: po.Client) -> None:
    droplet = client.droplets.create("web-1", region="nyc3", size=SIZE, image=IMAGE)
    assert droplet.ip_address

    domain = client.domains.create("example.com", ip_address=droplet.ip_address)
    records = client.domains.records("example.com")
    www = records.create("A", "www", droplet.ip_address)

    assert domain["name"] == "example.com"
    assert [(r["type"], r["name"], r["data"]) for r in records.list(type="A")] == [
        ("A", "@", droplet.ip_address),
        ("A", "www", droplet.ip_address),
    ]
    assert (www["ttl"], records.get(www["id"])) == (1800, www)
    assert f"www IN A {droplet.ip_address}" in client.domains.get("example.com")["zone_file"]


def test_a_new_domain_has_the_soa_and_digitalocean_name_servers(client: po.Client) -> None:
    client.domains.create("example.org")

    records = client.domains.records("example.org").list()

    assert [(r["type"], r["data"]) for r in records] == [
        ("SOA", "1800"),
        ("NS", "ns1.digitalocean.com"),
        ("NS", "ns2.digitalocean.com"),
        ("NS", "ns3.digitalocean.com"),
    ]
    assert [d["name"] for d in client.domains.list()] == ["example.org"]


def test_a_domain_that_exists_is_refused_and_a_deleted_one_is_gone(client: po.Client) -> None:
    client.domains.create("example.com")
    with pytest.raises(ValidationError, match="already exists"):
        client.domains.create("example.com")

    client.domains.delete("example.com")

    with pytest.raises(NotFoundError):
        client.domains.get("example.com")


def test_records_are_filtered_by_type_and_by_name_short_or_qualified(client: po.Client) -> None:
    client.domains.create("example.com", ip_address="203.0.113.10")
    records = client.domains.records("example.com")
    records.create("A", "www", "203.0.113.11")
    records.create("MX", "@", "mail.example.com.", priority=10)
    records.create("TXT", "www", "hello")

    assert [r["type"] for r in records.list(name="www")] == ["A", "TXT"]
    assert [r["type"] for r in records.list(name="www.example.com")] == ["A", "TXT"]
    assert [r["data"] for r in records.list(type="A", name="@")] == ["203.0.113.10"]
    assert [(r["data"], r["priority"]) for r in records.list(type="MX")] == [("mail.example.com.", 10)]


def test_a_record_is_updated_in_place_and_deleted(client: po.Client, emulator: Emulator) -> None:
    client.domains.create("example.com")
    records = client.domains.records("example.com")
    www = records.create("A", "www", "203.0.113.11", ttl=3600)

    updated = records.update(www["id"], data="203.0.113.12", ttl=300)

    assert (updated["id"], updated["type"], updated["data"], updated["ttl"]) == (www["id"], "A", "203.0.113.12", 300)
    assert records.get(www["id"]) == updated
    records.delete(www["id"])
    assert records.list(type="A") == []
    with pytest.raises(NotFoundError):
        records.get(www["id"])


def test_a_record_the_api_refuses_raises_validation_error(client: po.Client) -> None:
    client.domains.create("example.com")
    records = client.domains.records("example.com")
    with pytest.raises(ValidationError, match="IPv4"):
        records.create("A", "www", "not-an-address")
    with pytest.raises(ValidationError, match="priority"):
        records.create("MX", "@", "mail.example.com.")


def test_records_of_a_missing_domain_raise_not_found(client: po.Client) -> None:
    with pytest.raises(NotFoundError):
        client.domains.records("example.net").list()


def test_find_many_lists_the_account_once_for_several_names_and_asks_by_name_for_one(
    client: po.Client, emulator: Emulator
) -> None:
    for name in ("a", "b", "b", "c"):
        emulator.add_droplet(name, "203.0.113.20")
    found = client.droplets.find_many(["a", "b", "missing", "a"])
    assert {name: len(droplets) for name, droplets in found.items()} == {"a": 1, "b": 2, "missing": 0}
    assert len(requests_to(emulator, "GET", "/v2/droplets")) == 2  # droplets and GPU droplets, one page each
    assert client.droplets.find_many(["c"])["c"][0].name == "c"
    assert [t for t in requests_to(emulator, "GET", "/v2/droplets")[2:] if "name=c" in t] != []
    assert client.droplets.find_many([]) == {}
    assert len(requests_to(emulator, "GET", "/v2/droplets")) == 4  # no name: no request
