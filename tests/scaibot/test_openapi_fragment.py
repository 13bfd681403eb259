"""homeserver/http/openapi/scaibot.json documents exactly the module's routes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from quart_trio import QuartTrio

from bridges.models import build_registry
from conf.sections import ModelsSettings, ScaibotSettings
from homeserver.modules.scaibot.module import PREFIX, ScaiBotModule

FRAGMENT = Path(__file__).parents[2] / "homeserver/http/openapi/scaibot.json"


async def _no_auth(token: str | None) -> Any:
    raise AssertionError("not called")


def test_fragment_paths_equal_the_blueprint_routes(tmp_path: Path) -> None:
    module = ScaiBotModule(
        settings=ScaibotSettings(),
        data_dir=tmp_path,
        writer=None,  # type: ignore[arg-type]
        readers=None,  # type: ignore[arg-type]
        clock=lambda: 0,
        authenticate=_no_auth,
        models=build_registry(ModelsSettings(), dev_echo=True),
        max_request_bytes=1 << 20,
    )
    app = QuartTrio("t")
    module.install(app)
    routes = {
        (re.sub(r"<(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(PREFIX)
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    doc = json.loads(FRAGMENT.read_text())
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert routes == documented
    assert set(doc) == {"paths", "components"}
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', FRAGMENT.read_text()))
    assert refs - set(doc["components"]["schemas"]) <= {"Envelope", "ErrorEnvelope"}
