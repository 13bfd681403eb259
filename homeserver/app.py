"""The composition root: build every service once, start them in one nursery.

writer (group commit) ──on_commit──> hub ──> stream connections
    ^                                  ^
services (auth, rooms, messages) ──────┘
    ^
Quart shim (REST)  +  stream driver  <── one listening port (Router)
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app
from quart import Blueprint

from bridges.models import ChatModels, ModelRegistry, build_registry
from conf import Settings
from homeserver.ai import AiParticipantService, AiRunner
from homeserver.clock import WallClock, system_ms
from homeserver.http.app import build_app, build_metrics_app
from homeserver.http.direct import DirectRoute, DirectServer
from homeserver.http.direct_sessions import DirectSessions
from homeserver.http.server import HttpServer, HttpStats
from homeserver.identity.auth import AuthService, Principal, check_credential_txn
from homeserver.identity.profiles import ProfileService
from homeserver.identity.revocation import RevocationWatcher
from homeserver.listener import KEEP_ALIVE_TIMEOUT, MAX_HEAD, ListenerStats, Router
from homeserver.live.ephemeral import PresenceService, TypingService
from homeserver.live.hub import Hub
from homeserver.media.service import MediaService
from homeserver.modules.scaibot.knowledge import routes as knowledge_routes
from homeserver.modules.scaibot.knowledge.build import build_knowledge
from homeserver.modules.scaibot.knowledge.service import KnowledgeService
from homeserver.modules.scaibot.module import ModuleContext, ScaiBotModule
from homeserver.modules.scaibot.ports import BotDirectory
from homeserver.observe.metered_models import MeteredModels
from homeserver.observe.metrics import Metrics
from homeserver.observe.stats import StreamStats
from homeserver.rooms.messages import MessageLimits, MessageService, SendRequest
from homeserver.rooms.relations import RelationService
from homeserver.rooms.service import RoomService
from homeserver.rooms.state import RoomStateService
from homeserver.sessions import SessionLimits, SessionService
from homeserver.store.database import Readers, Scrubber, Writer
from homeserver.store.engines import build_store
from homeserver.stream.connection import (
    Registry,
    StreamSettings,
    encode_text_frame,
    serve_stream,
)
from protocol.events import Event
from protocol.ids import AI as AI_PREFIX
from protocol.timefmt import iso_ms
from storage import participants as pstore
from storage import rooms as room_store

if TYPE_CHECKING:
    from homeserver.cluster.node import ClusterNode

log = logging.getLogger("homeserver")

DB_NAME = "homeserver.db"


@dataclass(frozen=True, slots=True)
class Running:
    """What a started server tells its starter (tests, the CLI)."""

    host: str
    port: int
    hub: Hub
    writer: Writer
    db_path: Path
    scrubber: Scrubber
    registry: Registry
    listener_stats: ListenerStats
    http_stats: HttpStats
    knowledge: KnowledgeService | None = None
    http_app: Any = None  # the Quart app (its url_map is what the OpenAPI test checks)
    metrics: Metrics | None = None
    metrics_port: int | None = None  # set when metrics have their own port
    direct_sse: DirectServer | None = None  # the listener's SSE fast path (None when off)
    engine: str = "sqlite"  # "postgres" with [cluster] database_url
    database_url: str = ""  # the PostgreSQL store's URL (engine "postgres")
    cluster: ClusterNode | None = None  # set when [cluster] bus_url is

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


class StreamBridge:
    """The services a stream connection uses (homeserver.stream.StreamServices)."""

    def __init__(
        self,
        settings: Settings,
        auth: AuthService,
        messages: MessageService,
        typing: TypingService,
        presence: PresenceService,
    ) -> None:
        self.tenant_id = settings.tenant_id
        self.server_name = settings.server_name
        self._auth = auth
        self._messages = messages
        self._typing = typing
        self._presence = presence

    async def authenticate(self, token: str | None) -> Principal:
        return await self._auth.authenticate(token)

    async def check_credential(self, principal: Principal) -> None:
        await self._auth.check_credential(principal)

    def seconds_left(self, principal: Principal) -> float | None:
        return self._auth.seconds_left(principal)

    async def send_message(
        self,
        principal: Principal,
        room_id: str,
        content: dict[str, Any],
        event_uuid: str | None,
        as_participant_id: str | None,
    ) -> Event:
        return await self._messages.send(
            SendRequest(
                principal.participant_id,
                room_id,
                content,
                event_uuid,
                as_participant_id,
                credential_check=partial(_check_live, principal),
            )
        )

    async def set_typing(self, principal: Principal, room_id: str, typing: bool) -> None:
        # Typing is not stored, so its credential check is a read (it sees
        # every committed revocation).
        await self._auth.check_credential(principal)
        await self._typing.request(principal.participant_id, room_id, typing)
        if typing:
            self._presence.active(principal.participant_id)

    async def replay(self, participant_id: str, since: int, limit: int) -> list[Event]:
        return await self._messages.replay(participant_id, since, limit)

    def now_iso(self) -> str:
        return iso_ms(system_ms())


def _check_live(principal: Principal, conn: sqlite3.Connection, now_ms: int) -> None:
    check_credential_txn(conn, principal, now_ms)


def _hypercorn_config(settings: Settings) -> HyperConfig:
    config = HyperConfig()
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    config.h11_max_incomplete_size = MAX_HEAD  # the router reads first heads to the same cap
    config.graceful_timeout = 5
    config.loglevel = "WARNING"
    config.accesslog = None
    return config


def prepare_data_dir(settings: Settings) -> Path:
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir / DB_NAME


@dataclass(frozen=True, slots=True)
class _Graph:
    """Every service, built once. Lives only inside this composition root."""

    hub: Hub
    quart_app: Any
    bridge: StreamBridge
    presence: PresenceService
    typing: TypingService
    scrubber: Scrubber
    registry: Registry
    revocations: RevocationWatcher
    sessions: SessionService
    ai_runner: AiRunner
    scaibot: ScaiBotModule
    knowledge: KnowledgeService | None  # None: [knowledge] enabled = false
    stream_stats: StreamStats
    metrics: Metrics  # always there (cheap); settings.metrics_enabled decides if it is served
    direct_sse: DirectServer | None  # the listener's fast path for SSE routes (or off)
    cluster: ClusterNode | None = None


def build_models(settings: Settings) -> ModelRegistry:
    """Every model the server offers: ``dev/echo`` (dev mode or ``models.dev_echo``) and the
    OpenAI-compatible ``[[models.backends]]``."""
    return build_registry(settings.models, dev_echo=settings.effective_dev_echo)


def build_scaibot(
    settings: Settings,
    writer: Writer,
    readers: Readers,
    clock: WallClock,
    auth: AuthService,
    models: ChatModels,
    knowledge: KnowledgeService | None,
    bots: BotDirectory | None = None,
) -> ScaiBotModule:
    """The ScaiBot module with its knowledge index plugged in: the index is the chat
    turn's retriever, drops a deleted bot's collection inside the deleting transaction,
    and adds the document routes to the module's blueprint. ``bots`` replaces the
    module's own bot directory for those routes (tests). Without a knowledge index
    (``[knowledge] enabled = false``) bots answer without retrieval."""
    module = partial(
        ScaiBotModule,
        settings=settings.scaibot,
        data_dir=Path(settings.data_dir),
        writer=writer,
        readers=readers,
        clock=clock,
        authenticate=auth.authenticate,
        models=models,
        max_request_bytes=settings.max_request_bytes,
    )
    if knowledge is None:
        return module()
    index = knowledge

    def documents(bp: Blueprint, ctx: ModuleContext) -> None:
        knowledge_routes.install(bp, auth, bots or ctx.bots, index, app=ctx.app, mount="")

    return module(
        retriever=knowledge.retriever,
        deletion_hooks=(knowledge.delete_collection_txn,),
        route_installers=(documents,),
    )


def build_direct(
    settings: Settings,
    auth: AuthService,
    sessions: SessionService,
    scaibot: ScaiBotModule,
    metrics: Metrics,
    replies: Registry,
) -> DirectServer | None:
    """The listener's fast path for the streamed routes that are on (None: all off)."""
    routes: list[DirectRoute] = []
    if settings.sessions.direct_sse:
        routes.append(
            DirectSessions(auth, sessions, limit=settings.max_request_bytes, registry=replies)
        )
    if settings.scaibot.direct_sse:
        routes.append(scaibot.direct_route())
    if not routes:
        return None
    return DirectServer(
        routes,
        limit=settings.max_request_bytes,
        metrics=metrics,
        access_log=settings.log_format == "json",
    )


def _build(
    settings: Settings,
    writer: Writer,
    readers: Readers,
    hub: Hub,
    clock: WallClock,
    scrubber: Scrubber,
    models: ModelRegistry | None = None,
    bots: BotDirectory | None = None,
    cluster: ClusterNode | None = None,
) -> _Graph:
    metrics = Metrics()
    stream_stats = StreamStats()
    auth = AuthService(
        writer,
        readers,
        clock,
        registration_enabled=settings.effective_registration,
        access_ttl=settings.access_token_ttl,
        refresh_ttl=settings.refresh_token_ttl,
        tenant_id=settings.tenant_id,
        first_registrant_admin=settings.dev,
    )
    rooms = RoomService(
        writer,
        readers,
        clock,
        max_members=settings.max_members_per_room,
        max_rooms=settings.max_rooms_per_participant,
    )
    messages = MessageService(
        writer,
        readers,
        hub,
        clock,
        MessageLimits(
            max_content_bytes=settings.max_content_bytes,
            idempotency_window_ms=settings.idempotency_window_seconds * 1000,
            rate_limit_window=float(settings.rate_limit_window_seconds),
            rate_limit_for=settings.rate_limit_for,
        ),
        limiter=cluster.limiter if cluster is not None else None,
    )
    relations = RelationService(
        writer,
        readers,
        hub,
        clock,
        tenant_id=settings.tenant_id,
        max_content_bytes=settings.max_content_bytes,
        edit_window_ms=settings.edit_window_seconds * 1000,
    )

    async def types_of(ids: list[str]) -> dict[str, str]:
        found = await readers.read(pstore.get_participants, ids)
        return {pid: p.participant_type for pid, p in found.items()}

    presence_settings: dict[str, Any] = {
        "tenant_id": settings.tenant_id,
        "idle_after": float(settings.presence_idle_seconds),
        "heartbeat_ttl": float(settings.presence_heartbeat_ttl),
        "enabled": settings.presence_enabled,
    }
    presence = (
        PresenceService(hub, types_of, **presence_settings)
        if cluster is None
        else cluster.presence(types_of, **presence_settings)
    )

    async def read_only_of(pid: str, room_id: str) -> bool:
        member = await readers.read(room_store.get_membership, room_id, pid)
        return member is not None and member.read_only

    typing_settings: dict[str, Any] = {
        "tenant_id": settings.tenant_id,
        "timeout": settings.typing_timeout,
        "read_only_of": read_only_of,
    }
    typing = (
        TypingService(hub, **typing_settings)
        if cluster is None
        else cluster.typing(**typing_settings)
    )
    if cluster is not None:
        cluster.register_metrics(metrics.registry)

    def on_connections(sub: Any, delta: int) -> None:
        principal = getattr(sub, "principal", None)
        kind = getattr(principal, "participant_type", "human")
        if delta > 0:
            presence.connected(sub.participant_id, kind)
        else:
            presence.disconnected(sub.participant_id)

    relations.on_redacted = scrubber.request

    def on_sent(event: Event) -> None:
        typing.clear(event.actor_id, event.room_id)
        if not event.actor_id.startswith(AI_PREFIX):  # AIs are always online
            presence.active(event.actor_id)

    hub.on_connections = on_connections
    messages.on_sent = on_sent
    media = MediaService(
        writer,
        readers,
        clock,
        data_dir=Path(settings.data_dir),
        max_bytes=settings.media_max_bytes,
        uploads_per_minute=settings.media_uploads_per_minute,
        fsync=settings.db_synchronous == "full",
    )
    media.prepare()
    offered = models if models is not None else build_models(settings)
    chat_models = MeteredModels(offered, metrics)  # every AI feature calls models through it
    ai_participants = AiParticipantService(
        writer, readers, clock, chat_models, open_creation=settings.effective_ai_open_creation
    )
    ai_runner = AiRunner(
        hub=hub,
        readers=readers,
        messages=messages,
        rooms=rooms,
        models=chat_models,
        settings=settings.ai,
    )
    if cluster is None:
        ai_participants.on_created = ai_runner.added
        ai_participants.on_deleted = ai_runner.removed
    else:  # every process's runner hears of it
        cluster.ai_index.serve(ai_runner.added, ai_runner.removed, ai_runner.joined)
        ai_participants.on_created = cluster.ai_index.created
        ai_participants.on_deleted = cluster.ai_index.deleted
    sessions = SessionService(
        writer,
        readers,
        chat_models,
        clock,
        SessionLimits(
            heartbeat_seconds=settings.sessions.heartbeat_seconds,
            max_generations=settings.sessions.max_generations,
            max_per_participant=settings.sessions.max_per_participant,
        ),
    )
    knowledge = None
    if settings.knowledge.enabled:
        knowledge = build_knowledge(
            writer,
            readers,
            clock,
            settings.knowledge,
            data_dir=Path(settings.data_dir),
            on_erased=scrubber.request,
            fsync=settings.db_synchronous == "full",
        )
    scaibot = build_scaibot(settings, writer, readers, clock, auth, chat_models, knowledge, bots)
    metrics.watch(
        hub=hub,
        writer=writer.stats,
        stream=stream_stats,
        rate_limited=lambda: {
            "messages": messages.rate_limit_refusals,
            "media_uploads": media.rate_limit_refusals,
        },
    )
    quart_app = build_app(
        settings,
        auth=auth,
        rooms=rooms,
        messages=messages,
        profiles=ProfileService(writer, readers),
        relations=relations,
        state=RoomStateService(writer, readers, presence, clock),
        presence=presence,
        typing=typing,
        media=media,
        models=offered,
        sessions=sessions,
        ai=(ai_participants, ai_runner),
        installers=(scaibot.install,),
        metrics=metrics,
    )
    bridge = StreamBridge(settings, auth, messages, typing, presence)
    registry = Registry() if cluster is None else cluster.registry
    direct_replies = Registry()  # session replies the fast path streams (revocation)
    direct_sse = build_direct(settings, auth, sessions, scaibot, metrics, direct_replies)
    revocations = RevocationWatcher(readers, registry, direct_replies)
    auth.on_revoked = revocations.wake
    return _Graph(
        hub,
        quart_app,
        bridge,
        presence,
        typing,
        scrubber,
        registry,
        revocations,
        sessions,
        ai_runner,
        scaibot,
        knowledge,
        stream_stats,
        metrics,
        direct_sse,
        cluster,
    )


async def run(
    settings: Settings,
    *,
    clock: WallClock = system_ms,
    models: ModelRegistry | None = None,
    bots: BotDirectory | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole server until cancelled. Reports :class:`Running` once it accepts.

    ``models`` replaces the registry built from ``settings.models`` (tests).
    ``bots`` replaces the ScaiBot bot directory the knowledge routes authorise through
    (knowledge tests pass a fake).
    """
    db_path = prepare_data_dir(settings)
    store = build_store(settings, db_path)
    writer, readers = store.writer, store.readers
    position = writer.open()
    if store.engine == "postgres":
        log.info(
            "store: PostgreSQL (head position %d); redactions erase rows but cannot scrub"
            " PostgreSQL's WAL, replicas or backups (README, cluster mode)",
            position,
        )
    readers.open()
    try:
        hub = Hub(settings.tenant_id, encode_text_frame)
        hub.load_memberships(await readers.read(room_store.all_joined), position)
        if not settings.cluster.bus_url:
            writer.set_on_commit(hub.publish_events)
            graph = _build(settings, writer, readers, hub, clock, store.scrubber, models, bots)
            await _serve(settings, writer, graph, db_path, store.engine, task_status)
            return
        from homeserver.cluster.node import ClusterNode, open_bus  # coredis: [cluster] extra

        async with open_bus(settings.cluster.bus_url) as bus:
            node = ClusterNode(settings, bus, hub, readers, applied=position, clock=clock)
            writer.set_on_commit(node.feed.on_commit)  # the hub is fed by the cluster feed
            graph = _build(
                settings, writer, readers, hub, clock, store.scrubber, models, bots, node
            )
            await _serve(settings, writer, graph, db_path, store.engine, task_status)
    finally:
        stats = writer.stats
        log.info(
            "writer: %d jobs in %d batches (mean %.1f, largest %d), %d failed commits",
            stats.jobs,
            stats.batches,
            stats.jobs / max(1, stats.batches),
            stats.largest_batch,
            stats.failed_commits,
        )
        readers.close()
        writer.close()


async def _serve(
    settings: Settings,
    writer: Writer,
    graph: _Graph,
    db_path: Path,
    engine: str,
    task_status: trio.TaskStatus[Running],
) -> None:
    hub, quart_app, bridge = graph.hub, graph.quart_app, graph.bridge
    config = _hypercorn_config(settings)
    asgi = wrap_app(quart_app, config.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(asgi, config, lifespan_state)
    stream_settings = StreamSettings(
        ping_interval=settings.ws_ping_interval,
        queue_bytes=settings.ws_queue_bytes,
        max_frame_bytes=settings.ws_max_frame_bytes,
        close_duplicate=settings.ws_close_duplicate,
        max_connections=settings.ws_max_connections,
        log_lifecycle=settings.log_format == "json",
    )

    http_stats = HttpStats()

    def http_for(
        app: Any, handback: Callable[[bytes], bool] | None = None
    ) -> Callable[[trio.abc.Stream], Awaitable[bytes | None]]:
        async def http(stream: trio.abc.Stream) -> bytes | None:
            # TCPServer is typed for SSL streams but takes any stream with a .socket
            # (it falls back to plain HTTP when the stream has no SSL handshake).
            server = HttpServer(
                app,
                config,
                context,
                ConnectionState(lifespan_state.copy()),
                stream,
                stats=http_stats,
                handback=handback,
            )
            await server.run()
            return server.returned  # a request for the router's fast path, or None

        return http

    http = http_for(asgi, graph.direct_sse.wants if graph.direct_sse is not None else None)

    router = Router(
        http=http,
        stream=partial(
            serve_stream,
            hub=hub,
            registry=graph.registry,
            services=bridge,
            settings=stream_settings,
            stats=graph.stream_stats,
        ),
        fast=graph.direct_sse,
    )
    async with trio.open_nursery() as nursery:
        if graph.cluster is not None:
            await nursery.start(graph.cluster.run)  # the feed subscribes before any write
        await nursery.start(writer.run)
        if graph.cluster is None:
            await nursery.start(graph.presence.run)
            await nursery.start(graph.typing.run)
        await nursery.start(graph.scrubber.run)
        await nursery.start(graph.revocations.run)
        await nursery.start(graph.sessions.run)
        await nursery.start(graph.ai_runner.run)
        await nursery.start(graph.scaibot.run)
        if graph.knowledge is not None:
            await nursery.start(graph.knowledge.run)
        await nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        listeners = await trio.open_tcp_listeners(settings.port, host=settings.host, backlog=2048)
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, router.handle, listeners)
        log.info("listening on http://%s:%d (REST and /v1/stream)", settings.host, port)
        metrics_port = None
        if settings.metrics_enabled and settings.metrics_port:
            metrics_asgi = wrap_app(build_metrics_app(graph.metrics), 1024, "asgi")
            serve_metrics = http_for(metrics_asgi)
            extra = await trio.open_tcp_listeners(settings.metrics_port, host=settings.host)
            metrics_port = extra[0].socket.getsockname()[1]
            nursery.start_soon(trio.serve_listeners, serve_metrics, extra)
            log.info("metrics on http://%s:%d/metrics", settings.host, metrics_port)
        if settings.effective_registration:
            log.warning("open registration is ON (dev mode): anyone can create an account")
        task_status.started(
            Running(
                settings.host,
                port,
                hub,
                writer,
                db_path,
                graph.scrubber,
                graph.registry,
                router.stats,
                http_stats,
                graph.knowledge,
                http_app=quart_app,
                metrics=graph.metrics,
                metrics_port=metrics_port,
                direct_sse=graph.direct_sse,
                engine=engine,
                database_url=settings.cluster.database_url if engine == "postgres" else "",
                cluster=graph.cluster,
            )
        )
