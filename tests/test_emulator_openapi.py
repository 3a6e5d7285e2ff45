"""The emulator answers with the shapes of DigitalOcean's official OpenAPI document.

Each test makes a real HTTP request to a running emulator and validates the
body against the response schema of the matching operation in the vendored
document (``tests/openapi/openapi.yaml``), ``$ref``s resolved inside it, and
checks the response headers the operation declares. A second check rejects
any property the document does not declare, so the emulator cannot invent
fields that a client might come to rely on.
"""

from __future__ import annotations

import ast
import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry
from referencing.jsonschema import DRAFT4

from poseidon.sandbox.emulator import Emulator

DOCUMENT = Path(__file__).parent / "openapi" / "openapi.yaml"
URI = "urn:digitalocean:openapi"
TOKEN = "emulator-openapi-token"


# -- the document ------------------------------------------------------------------


class OpenAPI:
    """The vendored document, its schemas resolvable by JSON pointer."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.registry: Registry[Any] = Registry().with_resource(URI, DRAFT4.create_resource(document))

    def _follow(self, node: dict[str, Any], pointer: str) -> tuple[dict[str, Any], str]:
        """Follow ``$ref``s between non-schema objects (responses), keeping the pointer."""
        while "$ref" in node:
            pointer = node["$ref"]
            node = self.registry.resolver(URI).lookup(f"{URI}{pointer}").contents
        return node, pointer

    def response(self, path: str, method: str, status: int) -> tuple[dict[str, Any], str]:
        """The response object of an operation for ``status`` (else ``default``) and its pointer."""
        responses = self.document["paths"][path][method]["responses"]
        key = str(status) if str(status) in responses else "default"
        escaped = path.replace("~", "~0").replace("/", "~1")
        return self._follow(responses[key], f"#/paths/{escaped}/{method}/responses/{key}")

    def body_schema(self, path: str, method: str, status: int) -> dict[str, Any]:
        """A schema that points at the operation's JSON body schema inside the document."""
        _, pointer = self.response(path, method, status)
        return {"$ref": f"{URI}{pointer}/content/application~1json/schema"}

    def validator(self, schema: dict[str, Any]) -> Any:
        return OAS30Validator(schema, registry=self.registry, format_checker=oas30_format_checker)

    def errors(self, instance: Any, schema: dict[str, Any]) -> list[str]:
        """Every way ``instance`` breaks ``schema``: schema violations, then undeclared properties."""
        found = [
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in self.validator(schema).iter_errors(instance)
        ]
        resolver = self.registry.resolver(URI)
        found += [f"{where}: not declared by the document" for where in undeclared(instance, schema, resolver)]
        return found


def _deref(schema: Any, resolver: Any) -> tuple[Any, Any]:
    while isinstance(schema, dict) and "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        schema, resolver = resolved.contents, resolved.resolver
    return schema, resolver


def _branches(schema: Any, resolver: Any) -> Iterator[tuple[dict[str, Any], Any]]:
    """The schema and every schema combined into it by allOf/anyOf/oneOf, refs followed."""
    schema, resolver = _deref(schema, resolver)
    if not isinstance(schema, dict):
        return
    yield schema, resolver
    for keyword in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(keyword, []):
            yield from _branches(sub, resolver)


def undeclared(instance: Any, schema: Any, resolver: Any, where: str = "$") -> Iterator[str]:
    """Paths of properties in ``instance`` that no branch of ``schema`` declares."""
    branches = list(_branches(schema, resolver))
    if isinstance(instance, dict):
        declared: dict[str, tuple[Any, Any]] = {}
        for branch, branch_resolver in branches:
            for name, sub in (branch.get("properties") or {}).items():
                declared.setdefault(name, (sub, branch_resolver))
        if not declared:
            return  # a free-form object
        for name, value in instance.items():
            if name not in declared:
                yield f"{where}.{name}"
            else:
                yield from undeclared(value, *declared[name], f"{where}.{name}")
    elif isinstance(instance, list):
        items = [(b["items"], r) for b, r in branches if "items" in b]
        for index, value in enumerate(instance):
            for item_schema, item_resolver in items:
                yield from undeclared(value, item_schema, item_resolver, f"{where}[{index}]")


@pytest.fixture(scope="session")
def openapi() -> OpenAPI:
    with DOCUMENT.open("rb") as stream:
        return OpenAPI(yaml.load(stream, Loader=yaml.CSafeLoader))


# -- the emulator ------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(TOKEN) as emulator:
        emulator.add_droplet("web-1", "127.0.0.2", tags=["web", "env:prod"], private_ip_address="10.116.0.2")
        emulator.add_droplet("Web-1", "127.0.0.3", region="ams3", size="s-2vcpu-4gb", image="debian-12-x64")
        for number in range(3, 6):
            emulator.add_droplet(f"worker-{number}", f"127.0.0.{number + 1}", tags=["workers"], status="off")
        yield emulator


def call(emulator: Emulator, path: str, token: str | None = TOKEN, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(emulator.url + path, params=params, headers=headers, timeout=10)


def assert_conforms(
    openapi: OpenAPI, response: requests.Response, path: str, method: str = "get"
) -> dict[str, Any]:
    """The response's headers and body are those the document declares for it."""
    declared, _ = openapi.response(path, method, response.status_code)
    assert response.headers["Content-Type"].startswith("application/json")
    for name, header in declared.get("headers", {}).items():
        header, _ = openapi._follow(header, "")
        assert name in response.headers, f"{name} header missing"
        text = response.headers[name]
        value: Any = int(text) if header["schema"].get("type") == "integer" else text
        assert not openapi.errors(value, header["schema"]), name
    body = response.json()
    problems = openapi.errors(body, openapi.body_schema(path, method, response.status_code))
    assert not problems, "\n".join(problems)
    return body  # type: ignore[no-any-return]


# -- the tests ------------------------------------------------------------------------


def test_listing_droplets_conforms_on_first_middle_and_last_page(openapi: OpenAPI, emulator: Emulator) -> None:
    first = assert_conforms(openapi, call(emulator, "/v2/droplets", per_page=2), "/v2/droplets")
    middle = assert_conforms(openapi, call(emulator, "/v2/droplets", per_page=2, page=2), "/v2/droplets")
    last = assert_conforms(openapi, call(emulator, "/v2/droplets", per_page=2, page=3), "/v2/droplets")

    assert [len(page["droplets"]) for page in (first, middle, last)] == [2, 2, 1]
    assert {page["meta"]["total"] for page in (first, middle, last)} == {5}
    assert sorted(first["links"]["pages"]) == ["last", "next"]
    assert sorted(middle["links"]["pages"]) == ["first", "last", "next", "prev"]
    assert sorted(last["links"]["pages"]) == ["first", "prev"]
    assert first["links"]["pages"]["next"] == f"{emulator.url}/v2/droplets?page=2&per_page=2"


def test_following_next_links_visits_every_droplet_once(openapi: OpenAPI, emulator: Emulator) -> None:
    url: str | None = f"{emulator.url}/v2/droplets?per_page=2"
    names = []
    while url:
        response = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        body = assert_conforms(openapi, response, "/v2/droplets")
        names += [d["name"] for d in body["droplets"]]
        url = body["links"].get("pages", {}).get("next")
    assert names == ["web-1", "Web-1", "worker-3", "worker-4", "worker-5"]


def test_a_single_page_has_no_page_links(openapi: OpenAPI, emulator: Emulator) -> None:
    body = assert_conforms(openapi, call(emulator, "/v2/droplets"), "/v2/droplets")
    assert body["links"] == {}
    assert len(body["droplets"]) == 5


def test_tag_filter_conforms_and_keeps_only_tagged_droplets(openapi: OpenAPI, emulator: Emulator) -> None:
    body = assert_conforms(openapi, call(emulator, "/v2/droplets", tag_name="workers"), "/v2/droplets")
    assert [d["name"] for d in body["droplets"]] == ["worker-3", "worker-4", "worker-5"]
    assert body["meta"]["total"] == 3


def test_name_filter_matches_whole_names_ignoring_case_like_the_real_api(
    openapi: OpenAPI, emulator: Emulator
) -> None:
    body = assert_conforms(openapi, call(emulator, "/v2/droplets", name="WEB-1"), "/v2/droplets")
    assert sorted(d["name"] for d in body["droplets"]) == ["Web-1", "web-1"]
    assert call(emulator, "/v2/droplets", name="web").json()["droplets"] == []


def test_getting_a_droplet_conforms_and_carries_its_addresses(openapi: OpenAPI, emulator: Emulator) -> None:
    listed = call(emulator, "/v2/droplets", name="web-1").json()["droplets"]
    droplet_id = next(d["id"] for d in listed if d["name"] == "web-1")

    body = assert_conforms(openapi, call(emulator, f"/v2/droplets/{droplet_id}"), "/v2/droplets/{droplet_id}")

    droplet = body["droplet"]
    assert droplet["id"] == droplet_id
    assert droplet["region"]["slug"] == "nyc3"
    assert {(n["type"], n["ip_address"]) for n in droplet["networks"]["v4"]} == {
        ("public", "127.0.0.2"),
        ("private", "10.116.0.2"),
    }
    assert droplet["tags"] == ["web", "env:prod"]


def test_listing_ssh_keys_conforms(openapi: OpenAPI, emulator: Emulator) -> None:
    body = assert_conforms(openapi, call(emulator, "/v2/account/keys"), "/v2/account/keys")
    assert body["meta"]["total"] == len(body["ssh_keys"]) == 1
    assert body["ssh_keys"][0]["public_key"].startswith("ssh-ed25519 ")


def test_account_conforms(openapi: OpenAPI, emulator: Emulator) -> None:
    body = assert_conforms(openapi, call(emulator, "/v2/account"), "/v2/account")
    assert body["account"]["status"] == "active"


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["no header", "wrong token"])
def test_a_request_without_the_right_token_gets_the_documented_401(
    openapi: OpenAPI, emulator: Emulator, token: str | None
) -> None:
    response = call(emulator, "/v2/droplets", token=token)
    assert response.status_code == 401
    body = assert_conforms(openapi, response, "/v2/droplets")
    assert body == {"id": "unauthorized", "message": "Unable to authenticate you."}


def test_an_unknown_droplet_gets_the_documented_404(openapi: OpenAPI, emulator: Emulator) -> None:
    response = call(emulator, "/v2/droplets/1")
    assert response.status_code == 404
    body = assert_conforms(openapi, response, "/v2/droplets/{droplet_id}")
    assert body["id"] == "not_found"


def test_an_unknown_path_gets_a_404_with_the_error_schema(openapi: OpenAPI, emulator: Emulator) -> None:
    response = call(emulator, "/v2/nowhere")
    assert response.status_code == 404
    assert response.headers["ratelimit-remaining"].isdigit()
    assert not openapi.errors(response.json(), {"$ref": f"{URI}#/components/schemas/error"})
    assert response.json()["id"] == "not_found"


@pytest.mark.parametrize("status", [429, 500])
def test_injected_faults_get_the_documented_error_answers(
    openapi: OpenAPI, emulator: Emulator, status: int
) -> None:
    emulator.inject(status, 1, retry_after=2)
    response = call(emulator, "/v2/droplets")
    assert response.status_code == status
    assert_conforms(openapi, response, "/v2/droplets")
    assert response.headers["Retry-After"] == "2"
    assert call(emulator, "/v2/droplets").status_code == 200


# -- the validator can fail ----------------------------------------------------------


@pytest.fixture()
def droplet_document(emulator: Emulator) -> dict[str, Any]:
    return copy.deepcopy(call(emulator, "/v2/droplets", tag_name="web").json())


def test_the_validator_accepts_the_unchanged_document(openapi: OpenAPI, droplet_document: dict[str, Any]) -> None:
    assert openapi.errors(droplet_document, openapi.body_schema("/v2/droplets", "get", 200)) == []


def test_a_droplet_missing_a_required_field_is_rejected(
    openapi: OpenAPI, droplet_document: dict[str, Any]
) -> None:
    del droplet_document["droplets"][0]["networks"]
    problems = openapi.errors(droplet_document, openapi.body_schema("/v2/droplets", "get", 200))
    assert any("'networks' is a required property" in p for p in problems), problems


def test_a_droplet_with_an_invalid_ip_address_is_rejected(
    openapi: OpenAPI, droplet_document: dict[str, Any]
) -> None:
    droplet_document["droplets"][0]["networks"]["v4"][0]["ip_address"] = "not-an-address"
    problems = openapi.errors(droplet_document, openapi.body_schema("/v2/droplets", "get", 200))
    assert any("is not a 'ipv4'" in p for p in problems), problems


def test_a_droplet_with_an_undeclared_field_is_rejected(
    openapi: OpenAPI, droplet_document: dict[str, Any]
) -> None:
    droplet_document["droplets"][0]["region"]["country"] = "US"
    problems = openapi.errors(droplet_document, openapi.body_schema("/v2/droplets", "get", 200))
    assert problems == ["$.droplets[0].region.country: not declared by the document"]


def test_a_list_without_meta_is_rejected(openapi: OpenAPI, droplet_document: dict[str, Any]) -> None:
    del droplet_document["meta"]
    problems = openapi.errors(droplet_document, openapi.body_schema("/v2/droplets", "get", 200))
    assert any("'meta' is a required property" in p for p in problems), problems


def test_the_emulator_imports_the_standard_library_only() -> None:
    import poseidon.sandbox.emulator as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        (alias.name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert imported - {"__future__"} <= sys.stdlib_module_names, imported - sys.stdlib_module_names
