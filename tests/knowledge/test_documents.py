"""Knowledge documents end to end: the routes on port 0 with a BotDirectory fake,
real generated files of every format, the indexing pipeline, retrieval."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from homeserver.app import Running
from homeserver.modules.scaibot.knowledge.service import KnowledgeService
from protocol.knowledge import KnowledgeSettings
from tests.knowledge.support import (
    DOCS,
    FakeBots,
    broken_docx_bytes,
    docx_bytes,
    encrypted_pdf_bytes,
    pdf_bytes,
    start_server,
    upload,
    wait_done,
)
from tests.support import Api, User, api_for, envelope_error, envelope_ok, make_settings

LOOSE = KnowledgeSettings(score_threshold=0.0)


@dataclass
class Env:
    running: Running
    api: Api
    bots: FakeBots
    alice: User
    bob: User

    @property
    def knowledge(self) -> KnowledgeService:
        assert self.running.knowledge is not None
        return self.running.knowledge

    async def texts(self, bot_id: str, query: str, mode: str = "hybrid") -> list[str]:
        bot = self.bots.bots[bot_id]
        found = await self.knowledge.retriever.retrieve(bot.collection_id, query, LOOSE, mode=mode)
        return [c.text for c in found]


@pytest.fixture
async def env(tmp_path: Path, database_url: str | None) -> AsyncIterator[Env]:
    bots = FakeBots()
    settings = make_settings(tmp_path / "data", database_url=database_url)
    async with (
        start_server(settings, bots=bots) as running,
        api_for(running) as api,
    ):
        alice = await api.register("alice")
        bob = await api.register("bob")
        bots.add("bot_a", alice)
        yield Env(running, api, bots, alice, bob)


async def indexed(
    env: Env, data: bytes, filename: str, name: str | None = None
) -> dict[str, object]:
    r = await upload(env.api, env.alice, "bot_a", data, filename, name)
    doc = envelope_ok(r, 201)
    assert doc["status"] == "uploaded"
    done = await wait_done(env.api, env.alice, "bot_a", doc["id"])
    assert done["status"] == "indexed", done
    assert done["chunk_count"] >= 1
    return done


async def test_txt_and_md_are_indexed_and_retrievable(env: Env) -> None:
    txt = await indexed(env, b"The walrus gateway restarts nightly at three.", "notes.txt", "Ops")
    assert txt["type"] == "txt"
    assert txt["name"] == "Ops"
    md = await indexed(env, b"# Billing\n\nInvoices go out on the first weekday.", "b.bin")
    assert md["type"] == "md"
    assert any(
        "walrus gateway" in t for t in await env.texts("bot_a", "when does the walrus restart")
    )
    assert any("Invoices" in t for t in await env.texts("bot_a", "invoices billing"))


async def test_html_scripts_and_styles_are_not_indexed(env: Env) -> None:
    page = (
        b"<!DOCTYPE html><html><head><title>Returns</title><style>.qzxstyle{color:red}</style>"
        b"<script>var qzxscript = 1;</script></head><body><h1>Returns policy</h1>"
        b"<p>Parcels may be <b>returned</b> within thirty days.</p>"
        b"<script>console.log('qzxinline')</script><noscript>qzxnoscript</noscript></body></html>"
    )
    doc = await indexed(env, page, "page.txt")
    assert doc["type"] == "html"
    texts = await env.texts("bot_a", "returned parcels thirty days")
    assert texts
    assert "returned within thirty days" in texts[0]
    for hidden in ("qzxstyle", "qzxscript", "qzxinline", "qzxnoscript", "color:red"):
        assert not await env.texts("bot_a", hidden.removeprefix("."), "bm25")
        assert all(hidden not in t for t in texts)


async def test_pdf_and_docx_are_indexed(env: Env) -> None:
    pdf = await indexed(env, pdf_bytes("The lighthouse beacon rotates every nine seconds."), "x")
    assert pdf["type"] == "pdf"
    assert pdf["mime_type"] == "application/pdf"
    docx = await indexed(env, docx_bytes("Ferry tickets are refundable.", "Bring a passport."), "y")
    assert docx["type"] == "docx"
    assert any("nine seconds" in t for t in await env.texts("bot_a", "lighthouse beacon rotation"))
    assert any("passport" in t for t in await env.texts("bot_a", "ferry tickets refundable"))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (encrypted_pdf_bytes("secret plans"), "encrypted"),
        (b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage garbage", "PDF cannot be read"),
        (broken_docx_bytes(), "DOCX cannot be read"),
        (pdf_bytes(" "), "no text"),
    ],
)
async def test_broken_documents_end_failed_with_a_reason(
    env: Env, data: bytes, reason: str
) -> None:
    r = await upload(env.api, env.alice, "bot_a", data, "f")
    doc = envelope_ok(r, 201)
    done = await wait_done(env.api, env.alice, "bot_a", doc["id"])
    assert done["status"] == "failed"
    assert reason in done["error"]
    assert done["chunk_count"] == 0


async def test_unsupported_type_is_415(env: Env) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    envelope_error(
        await upload(env.api, env.alice, "bot_a", png, "a.txt"), 415, "DOCUMENT_UNSUPPORTED"
    )
    binary = bytes(range(256)) * 4
    envelope_error(await upload(env.api, env.alice, "bot_a", binary), 415, "DOCUMENT_UNSUPPORTED")
    listed = await env.api.ok("GET", DOCS.format(bot="bot_a"), env.alice)
    assert listed["items"] == []


async def test_too_large_is_413(tmp_path: Path) -> None:
    from conf.knowledge import KnowledgeConfig

    bots = FakeBots()
    settings = make_settings(tmp_path / "d", knowledge=KnowledgeConfig(max_document_bytes=1000))
    async with start_server(settings, bots=bots) as running, api_for(running) as api:
        alice = await api.register("alice")
        bots.add("bot_a", alice)
        r = await upload(api, alice, "bot_a", b"word " * 400, "big.txt")
        error = envelope_error(r, 413, "DOCUMENT_TOO_LARGE")
        assert error["details"]["max_bytes"] == 1000
        # Streamed without a Content-Length: refused while streaming.
        body = (
            b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
            + b"word " * 400
            + b"\r\n--XyZ--\r\n"
        )

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 500):
                yield body[i : i + 500]

        r = await api.call(
            "POST",
            DOCS.format(bot="bot_a"),
            alice,
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=XyZ"},
        )
        envelope_error(r, 413, "DOCUMENT_TOO_LARGE")
        ok = await upload(api, alice, "bot_a", b"small enough", "s.txt")
        envelope_ok(ok, 201)


async def test_status_pipeline_in_order(env: Env) -> None:
    seen: list[tuple[str, str]] = []
    env.knowledge.indexer.observer = lambda doc_id, status: seen.append((doc_id, status))
    doc = await indexed(env, b"Status pipeline sentence.", "s.txt")
    bad = envelope_ok(await upload(env.api, env.alice, "bot_a", b"%PDF-1.4 junk", "b"), 201)
    await wait_done(env.api, env.alice, "bot_a", bad["id"])
    assert [s for d, s in seen if d == doc["id"]] == ["extracting", "indexing", "indexed"]
    assert [s for d, s in seen if d == bad["id"]] == ["extracting", "failed"]
    assert doc["indexed_at"] is not None


async def test_delete_and_replace_take_effect_at_once(env: Env) -> None:
    doc = await indexed(env, b"The heron clinic opens on Mondays.", "h.txt")
    path = DOCS.format(bot="bot_a") + f"/{doc['id']}"
    assert await env.texts("bot_a", "heron clinic")
    # Replace: the old text is out of retrieval as soon as PUT answers.
    r = await upload(
        env.api,
        env.alice,
        "bot_a",
        b"The osprey clinic opens on Fridays.",
        "o.txt",
        method="PUT",
        doc_id=str(doc["id"]),
    )
    replaced = envelope_ok(r, 200)
    assert replaced["id"] == doc["id"]
    assert replaced["status"] == "uploaded"
    assert not await env.texts("bot_a", "heron")
    done = await wait_done(env.api, env.alice, "bot_a", str(doc["id"]))
    assert done["status"] == "indexed"
    assert any("osprey" in t for t in await env.texts("bot_a", "osprey clinic"))
    # Delete: gone from retrieval when DELETE answers, and from the list.
    assert await env.api.ok("DELETE", path, env.alice) == {"id": doc["id"], "deleted": True}
    assert not await env.texts("bot_a", "osprey clinic")
    envelope_error(await env.api.call("GET", path, env.alice), 404, "DOCUMENT_NOT_FOUND")
    envelope_error(await env.api.call("DELETE", path, env.alice), 404, "DOCUMENT_NOT_FOUND")
    assert (await env.api.ok("GET", DOCS.format(bot="bot_a"), env.alice))["items"] == []


async def test_access_rules_and_paging(env: Env) -> None:
    docs = [
        await indexed(env, f"Paging sentence number {n}.".encode(), f"{n}.txt") for n in range(3)
    ]
    base = DOCS.format(bot="bot_a")
    # Same tenant may read, only the creator (or an admin) may write.
    page = envelope_ok(await env.api.call("GET", base + "?limit=2", env.bob), 200)
    assert [d["id"] for d in page["items"]] == [docs[0]["id"], docs[1]["id"]]
    r = await env.api.call("GET", base + "?limit=2", env.bob)
    cursor = r.json()["meta"]["next_cursor"]
    assert r.json()["meta"]["has_more"] is True
    rest = await env.api.ok("GET", base + f"?limit=2&cursor={cursor}", env.bob)
    assert [d["id"] for d in rest["items"]] == [docs[2]["id"]]
    r = await upload(env.api, env.bob, "bot_a", b"not mine", "n.txt")
    envelope_error(r, 403, "AUTHZ_PERMISSION_DENIED")
    r = await env.api.call("DELETE", base + f"/{docs[0]['id']}", env.bob)
    envelope_error(r, 403, "AUTHZ_PERMISSION_DENIED")
    envelope_error(
        await env.api.call("GET", DOCS.format(bot="bot_zz"), env.alice), 404, "BOT_NOT_FOUND"
    )
    for bad in ("limit=0", "limit=x", "limit=101", "cursor=zz"):
        envelope_error(
            await env.api.call("GET", base + "?" + bad, env.alice), 422, "VALIDATION_ERROR"
        )
    envelope_error(await env.api.call("GET", base), 401, "AUTH_TOKEN_MISSING")
    # Another bot's document is not found through this bot.
    env.bots.add("bot_b", env.alice)
    r = await env.api.call("GET", DOCS.format(bot="bot_b") + f"/{docs[0]['id']}", env.alice)
    envelope_error(r, 404, "DOCUMENT_NOT_FOUND")


async def test_bad_forms_are_422(env: Env) -> None:
    base = DOCS.format(bot="bot_a")
    r = await env.api.call("POST", base, env.alice, json={"file": "x"})
    assert envelope_error(r, 422, "VALIDATION_ERROR")
    r = await env.api.call(
        "POST", base, env.alice, data={"name": "n"}, files={"other": ("a", b"x")}
    )
    assert "file" in envelope_error(r, 422, "VALIDATION_ERROR")["message"]
    r = await upload(env.api, env.alice, "bot_a", b"", "empty.txt")
    envelope_error(r, 422, "VALIDATION_ERROR")
    r = await upload(env.api, env.alice, "bot_a", b"hello", "a.txt", name="n" * 300)
    envelope_error(r, 422, "VALIDATION_ERROR")


async def test_replace_while_indexing_keeps_only_the_new_file(env: Env) -> None:
    first = envelope_ok(await upload(env.api, env.alice, "bot_a", b"Kestrel " * 3000, "k.txt"), 201)
    r = await upload(
        env.api, env.alice, "bot_a", b"Nightjar notes.", "n.txt", method="PUT", doc_id=first["id"]
    )
    envelope_ok(r, 200)
    done = await wait_done(env.api, env.alice, "bot_a", first["id"])
    assert done["status"] == "indexed"
    assert done["chunk_count"] == 1
    assert not await env.texts("bot_a", "kestrel", "bm25")
    assert await env.texts("bot_a", "nightjar", "bm25") == ["Nightjar notes."]


async def test_collections_exist_for_linked_mode(env: Env) -> None:
    knowledge = env.knowledge
    assert not await knowledge.collection_exists("col_new")
    await env.running.writer.write(knowledge.create_collection_txn, "col_new")
    assert await knowledge.collection_exists("col_new")
    await env.running.writer.write(knowledge.create_collection_txn, "col_new")  # idempotent
    await indexed(env, b"Linked mode reads this.", "l.txt")
    assert await knowledge.collection_exists("col_a")
    # A linked bot reads another bot's collection through BotRef.retrieval_collection.
    import dataclasses

    linked = dataclasses.replace(
        env.bots.add("bot_l", env.alice), knowledge_mode="linked", knowledge_collection_id="col_a"
    )
    found = await knowledge.retriever.retrieve(linked.retrieval_collection, "linked mode", LOOSE)
    assert [c.text for c in found] == ["Linked mode reads this."]
    assert await knowledge.retriever.retrieve("col_missing", "linked mode", LOOSE) == []


def test_openapi_fragment_documents_every_route() -> None:
    import json

    from quart_trio import QuartTrio

    from homeserver.modules.scaibot.knowledge import routes

    app = QuartTrio("t")

    class _Knowledge:
        max_body_bytes = 1

    routes.install(app, None, FakeBots(), _Knowledge())  # type: ignore[arg-type]
    served = {
        (rule.rule.replace("<", "{").replace(">", "}"), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(routes.PREFIX)
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    path = Path(routes.__file__).parents[3] / "http" / "openapi" / "scaibot_knowledge.json"
    spec = json.loads(path.read_text())
    documented = {(p, m) for p, ops in spec["paths"].items() for m in ops}
    assert served == documented
    for ops in spec["paths"].values():
        for op in ops.values():
            for ref in json.dumps(op).split('"$ref": "')[1:]:
                name = ref.split('"')[0].rsplit("/", 1)[1]
                assert name in spec["components"]["schemas"] or name in (
                    "Envelope",
                    "ErrorEnvelope",
                )
