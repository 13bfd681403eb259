"""The OpenAPI document: fragments merge, collisions are refused, routes == documented paths."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from homeserver.app import Running
from homeserver.http import apidoc
from homeserver.http.observe import template
from tests.support import Api

# Routes Quart adds by itself, not ours to document.
NOT_OURS = {"static"}
# HEAD and OPTIONS are answered for every GET / every route by Quart itself.
IMPLICIT = {"HEAD", "OPTIONS"}


def routed(rules: Iterable[Any]) -> set[tuple[str, str]]:
    """(OpenAPI path, METHOD) of every rule of a Quart url_map."""
    return {
        (template(rule.rule), method)
        for rule in rules
        if rule.endpoint not in NOT_OURS
        for method in set(rule.methods or ()) - IMPLICIT
    }


def coverage_gaps(
    routes: set[tuple[str, str]], doc: dict[str, Any]
) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(routed but undocumented, documented but not routed)."""
    documented = apidoc.operations(doc)
    return routes - documented, documented - routes


async def test_every_route_is_documented_and_every_documented_operation_is_routed(
    server: Running,
) -> None:
    # /v1/stream is not a Quart route (homeserver.listener hands it to the
    # WebSocket driver before HTTP parsing), so it is in neither set.
    routes = routed(server.http_app.url_map.iter_rules())
    assert ("/v1/rooms/{room_id}", "PATCH") in routes
    undocumented, missing = coverage_gaps(routes, apidoc.document())
    assert not undocumented, f"routes with no OpenAPI operation: {sorted(undocumented)}"
    assert not missing, f"documented operations with no route: {sorted(missing)}"
    assert all(not path.startswith("/v1/stream") for path, _ in routes)


def test_the_coverage_check_fails_both_ways() -> None:
    doc = {"paths": {"/v1/a/{x}": {"get": {}, "parameters": []}, "/v1/gone": {"post": {}}}}
    routes = {("/v1/a/{x}", "GET"), ("/v1/a/{x}", "DELETE"), ("/v1/new", "GET")}
    undocumented, missing = coverage_gaps(routes, doc)
    assert undocumented == {("/v1/a/{x}", "DELETE"), ("/v1/new", "GET")}
    assert missing == {("/v1/gone", "POST")}


def test_rule_templates() -> None:
    assert template("/v1/rooms/<room_id>/members/<member_id>") == (
        "/v1/rooms/{room_id}/members/{member_id}"
    )
    assert template("/files/<path:name>") == "/files/{name}"


async def test_served_document_is_the_merged_fragments(api: Api) -> None:
    r = await api.call("GET", "/v1/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc == apidoc.document()
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"]
    assert doc["servers"] == [{"url": "/"}]
    assert {"Envelope", "ErrorEnvelope", "Error"} <= set(doc["components"]["schemas"])
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_ref_resolves_and_every_operation_answers_json_errors() -> None:
    doc = apidoc.document()
    for ref in set(_refs(doc)):
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            assert isinstance(node, dict)
            assert part in node, f"unresolved $ref {ref}"
            node = node[part]
    ids = [
        op["operationId"]
        for item in doc["paths"].values()
        for method, op in item.items()
        if method in apidoc.HTTP_METHODS
    ]
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def _fragment(directory: Path, name: str, body: dict[str, Any]) -> None:
    (directory / name).write_text(json.dumps(body))


def test_fragments_merge_and_collisions_are_refused(tmp_path: Path) -> None:
    ok = tmp_path / "ok"
    ok.mkdir()
    _fragment(ok, "_common.json", {"components": {"schemas": {"Envelope": {}}}})
    _fragment(ok, "a.json", {"paths": {"/a": {"get": {}}}, "components": {"schemas": {"A": {}}}})
    _fragment(ok, "b.json", {"paths": {"/b": {"get": {}}}})
    doc = apidoc.merge(apidoc.read_fragments(ok))
    assert set(doc["paths"]) == {"/a", "/b"}
    assert set(doc["components"]["schemas"]) == {"Envelope", "A"}
    assert doc["openapi"] == "3.1.0"

    _fragment(ok, "c.json", {"paths": {"/a": {"post": {}}}})
    with pytest.raises(apidoc.FragmentError, match=r"'/a' is described in both a.json and c.json"):
        apidoc.merge(apidoc.read_fragments(ok))
    (ok / "c.json").unlink()

    _fragment(ok, "d.json", {"components": {"schemas": {"A": {"type": "string"}}}})
    with pytest.raises(apidoc.FragmentError, match=r"schemas.A is defined in both a.json and d"):
        apidoc.merge(apidoc.read_fragments(ok))
    (ok / "d.json").unlink()

    _fragment(ok, "e.json", {"openapi": "3.0.0", "paths": {}})
    with pytest.raises(apidoc.FragmentError, match=r"e.json: unknown top-level keys"):
        apidoc.read_fragments(ok)
    (ok / "e.json").write_text("{not json")
    with pytest.raises(apidoc.FragmentError, match=r"e.json: not valid JSON"):
        apidoc.read_fragments(ok)
