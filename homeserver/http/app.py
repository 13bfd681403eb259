"""Build the Quart app: every route module, wired with the services it uses."""

from __future__ import annotations

from quart import Response
from quart_trio import QuartTrio

from bridges.models import ModelRegistry
from conf import Settings
from homeserver.auth import AuthService
from homeserver.ephemeral import PresenceService, TypingService
from homeserver.http import (
    routes_auth,
    routes_media,
    routes_messages,
    routes_models,
    routes_relations,
    routes_rooms,
    routes_state,
)
from homeserver.http.shim import install_fallbacks, json_response
from homeserver.media import MediaService
from homeserver.messages import MessageService
from homeserver.modules.scaibot.knowledge import routes as knowledge_routes
from homeserver.modules.scaibot.knowledge.service import KnowledgeService
from homeserver.modules.scaibot.ports import BotDirectory
from homeserver.profiles import ProfileService
from homeserver.relations import RelationService
from homeserver.rooms import RoomService
from homeserver.roomstate import RoomStateService


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
    knowledge: tuple[KnowledgeService, BotDirectory] | None = None,
) -> QuartTrio:
    app = QuartTrio("homeserver")
    install_fallbacks(app, settings.max_request_bytes)
    limit = settings.max_request_bytes

    @app.route("/health")
    async def health() -> Response:
        return json_response({"status": "ok", "data": {"healthy": True}})

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
    if knowledge is not None:
        knowledge_routes.install(app, auth, knowledge[1], knowledge[0])
    return app
