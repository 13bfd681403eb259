"""The ScaiBot module's composition: services built once, one blueprint, one background task.

The seam for the knowledge index (issue 13) and anything else that plugs in:

    ScaiBotModule(...,
        retriever=index,                      # a ports.Retriever (default NoKnowledge())
        deletion_hooks=(index.delete_bot,),   # ports.BotDeletionHook, run in the deleting txn
        route_installers=(documents.install,) # RouteInstaller(bp, ModuleContext)
    )

A route installer adds routes to the module's blueprint (mounted at
``/v1/modules/scaibot``) with ``homeserver.http.shim.route(bp, path, methods,
family="bot")``; its :class:`ModuleContext` gives it the operator check
(embed tokens refused), the :class:`~ports.BotDirectory` and the body limit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from quart import Blueprint, Quart, request

from bridges.models.base import ChatModels
from conf.sections import ScaibotSettings
from homeserver.clock import WallClock
from homeserver.modules.scaibot import routes_bots, routes_chat
from homeserver.modules.scaibot.access import Authenticate, Callers, load_secret
from homeserver.modules.scaibot.actions import ActionRunner
from homeserver.modules.scaibot.bots import BotService
from homeserver.modules.scaibot.chat import ChatService
from homeserver.modules.scaibot.conversations import ConversationService
from homeserver.modules.scaibot.direct_chat import DirectChat
from homeserver.modules.scaibot.ports import BotDeletionHook, BotDirectory, NoKnowledge, Retriever
from homeserver.modules.scaibot.rules import RuleService
from homeserver.store.database import Readers, Writer

PREFIX = "/v1/modules/scaibot"
WIDGET_PATH = PREFIX + "/widget.js"


@dataclass(frozen=True, slots=True)
class ModuleContext:
    """What a plugged-in route installer gets."""

    operator: Authenticate  # bearer -> Principal; embed tokens get 403
    bots: BotDirectory
    limit: int  # request body limit (bytes)
    app: Any = None  # the Quart app the blueprint is mounted on (streamed-body limits)


RouteInstaller = Callable[[Blueprint, ModuleContext], None]


class _Vader:
    """VADER's compound score (-1..1), its lexicon loaded on first use."""

    def __init__(self) -> None:
        self._analyser: Any = None

    def __call__(self, text: str) -> float:
        if self._analyser is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            self._analyser = SentimentIntensityAnalyzer()
        return float(self._analyser.polarity_scores(text)["compound"])


class ScaiBotModule:
    def __init__(
        self,
        *,
        settings: ScaibotSettings,
        data_dir: Path,
        writer: Writer,
        readers: Readers,
        clock: WallClock,
        authenticate: Authenticate,
        models: ChatModels,
        max_request_bytes: int,
        retriever: Retriever | None = None,
        deletion_hooks: Sequence[BotDeletionHook] = (),
        route_installers: Sequence[RouteInstaller] = (),
    ) -> None:
        self._settings = settings
        self._limit = max_request_bytes
        secret = load_secret(data_dir)
        self.callers = Callers(authenticate, readers, clock, secret)
        self.bots = BotService(
            writer, readers, clock, models, secret=secret, deletion_hooks=deletion_hooks
        )
        self.rules = RuleService(writer, readers, clock, self.bots)
        self.actions = ActionRunner(writer, clock, settings)
        self.chat = ChatService(
            writer,
            readers,
            clock,
            models,
            retriever or NoKnowledge(),
            self.actions,
            settings,
            _Vader(),
        )
        self.conversations = ConversationService(writer, readers, clock)
        self._models = models
        self._installers = tuple(route_installers)

    @property
    def directory(self) -> BotDirectory:
        return self.bots

    def widget_url(self) -> str:
        if self._settings.widget_url:
            return self._settings.widget_url
        return request.host_url.rstrip("/") + WIDGET_PATH

    def blueprint(self, app: Quart | None = None) -> Blueprint:
        bp = Blueprint("scaibot", __name__, url_prefix=PREFIX)
        routes_bots.install(
            bp,
            self.callers,
            self.bots,
            self.rules,
            self._models,
            limit=self._limit,
            widget_url=self.widget_url,
        )
        routes_chat.install(bp, self.callers, self.chat, self.conversations, limit=self._limit)
        context = ModuleContext(self.callers.operator, self.bots, self._limit, app)
        for install in self._installers:
            install(bp, context)
        return bp

    def direct_route(self) -> DirectChat:
        """``POST /chat`` for the listener's fast path (homeserver/http/direct.py)."""
        return DirectChat(self.callers, self.chat, limit=self._limit, prefix=PREFIX)

    def install(self, app: Quart) -> None:
        """Mount the module's one blueprint under ``/v1/modules/scaibot``."""
        app.register_blueprint(self.blueprint(app))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The background actions (escalation deliveries); runs until the server stops."""
        await self.actions.run(task_status=task_status)
