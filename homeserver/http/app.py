"""Build the Quart app: every route module, wired with the services it uses."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from quart import Response
from quart_trio import QuartTrio

from bridges.models import ModelRegistry
from conf import Settings
from homeserver.ai import AiParticipantService, AiRunner
from homeserver.http import (
    apidoc,
    observe,
    routes_ai,
    routes_auth,
    routes_media,
    routes_messages,
    routes_models,
    routes_relations,
    routes_rooms,
    routes_sessions,
    routes_state,
)
from homeserver.http.shim import install_fallbacks, json_response, route
from homeserver.identity.auth import AuthService
from homeserver.identity.profiles import ProfileService
from homeserver.live.ephemeral import PresenceService, TypingService
from homeserver.media.service import MediaService
from homeserver.observe.metrics import Metrics
from homeserver.rooms.messages import MessageService
from homeserver.rooms.relations import RelationService
from homeserver.rooms.service import RoomService
from homeserver.rooms.state import RoomStateService
from homeserver.sessions import SessionService


def build_app(
    settings: Settings,
    *,
    auth: AuthService,
    rooms: RoomService,
    messages: MessageService,
    profiles: ProfileService,
    relations: RelationService,
    state: RoomStateService,
    presence: PresenceService,
    typing: TypingService,
    media: MediaService | None = None,
    models: ModelRegistry | None = None,
    sessions: SessionService | None = None,
    ai: tuple[AiParticipantService, AiRunner] | None = None,
    installers: Sequence[Callable[[QuartTrio], None]] = (),
    metrics: Metrics | None = None,
) -> QuartTrio:
    app = QuartTrio("homeserver")
    install_fallbacks(app, settings.max_request_bytes)
    observe.install(app, metrics, access_log=settings.log_format == "json")
    limit = settings.max_request_bytes

    @app.route("/health")
    async def health() -> Response:
        return json_response({"status": "ok", "data": {"healthy": True}})

    @route(app, "/v1/openapi.json", ["GET"])
    async def openapi() -> Response:
        return Response(apidoc.document_bytes(), content_type="application/json")

    if metrics is not None and settings.metrics_enabled and settings.metrics_port == 0:
        install_metrics_route(app, metrics)

    routes_auth.install(app, auth, profiles, limit)
    routes_rooms.install(
        app,
        auth,
        rooms,
        messages,
        profiles,
        limit=limit,
        tenant_id=settings.tenant_id,
        max_page=settings.history_max_limit,
    )
    routes_messages.install(
        app,
        auth,
        messages,
        limit=limit,
        tenant_id=settings.tenant_id,
        history_default=settings.history_default_limit,
        history_max=settings.history_max_limit,
        sync_default=settings.sync_default_limit,
        sync_max=settings.sync_max_limit,
        sync_timeout_default=settings.sync_default_timeout_ms,
        sync_timeout_max=settings.sync_max_timeout_ms,
    )
    routes_relations.install(app, auth, relations, limit=limit, tenant_id=settings.tenant_id)
    routes_state.install(app, auth, state, presence, typing, limit=limit)
    if media is not None:
        routes_media.install(app, auth, media)
    if models is not None:
        routes_models.install(app, auth, models)
    if sessions is not None:
        routes_sessions.install(app, auth, sessions, limit=limit)
    if ai is not None:
        routes_ai.install(app, auth, *ai, limit=limit, max_page=settings.history_max_limit)
    for install in installers:  # modules (ScaiBot) mount their blueprints
        install(app)
    return app


def install_metrics_route(app: QuartTrio, metrics: Metrics) -> None:
    """``GET /metrics``: the Prometheus text exposition of this server."""

    @route(app, "/metrics", ["GET"])
    async def scrape() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)


def build_metrics_app(metrics: Metrics) -> QuartTrio:
    """The app on ``metrics_port`` when metrics have a port of their own."""
    app = QuartTrio("homeserver.observe.metrics")
    install_fallbacks(app, 1024)
    install_metrics_route(app, metrics)
    return app
