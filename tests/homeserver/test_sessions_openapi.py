"""The sessions and models OpenAPI fragments describe exactly the routes they own."""

from __future__ import annotations

import json
import re
from pathlib import Path

from quart_trio import QuartTrio

from homeserver.http import routes_models, routes_sessions

FRAGMENTS = Path(__file__).parents[2] / "homeserver" / "http" / "openapi"
METHODS = {"get", "post", "patch", "delete", "put"}


def _documented() -> set[tuple[str, str]]:
    out = set()
    for name in ("sessions.json", "models.json"):
        doc = json.loads((FRAGMENTS / name).read_text("utf-8"))
        assert set(doc) <= {"paths", "components", "tags"}
        for path, item in doc["paths"].items():
            out |= {(path, m.upper()) for m in item if m in METHODS}
    return out


def test_fragments_match_the_routes() -> None:
    # The route table of an app with only these two route modules installed.
    probe = QuartTrio("probe")
    routes_models.install(probe, None, None)  # type: ignore[arg-type]

    class _Limits:
        heartbeat_seconds = 15.0

    class _Sessions:
        limits = _Limits()

    routes_sessions.install(probe, None, _Sessions(), limit=1)  # type: ignore[arg-type]
    routes = {
        (re.sub(r"<([a-z_]+)>", r"{\1}", rule.rule), method)
        for rule in probe.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"} and rule.rule.startswith("/v1/")
    }
    assert routes == _documented()
