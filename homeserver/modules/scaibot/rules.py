"""Escalation rules CRUD and reorder (seed 002 "Escalation")."""

from __future__ import annotations

from homeserver.clock import WallClock
from homeserver.identity.auth import Principal
from homeserver.modules.scaibot.bots import BotService
from homeserver.store.database import Readers, Writer
from protocol import ids
from protocol.errors import ApiError, ErrorCode, invalid
from protocol.scaibot.escalation import RuleSpec, reorder_priorities
from storage.scaibot import bots as store
from storage.scaibot.bots import StoredRule

RULE = "esc_"
MAX_RULES = 100


def rule_not_found(rule_id: str) -> ApiError:
    return ApiError(
        ErrorCode.ESCALATION_NOT_FOUND,
        f"no escalation rule {rule_id[:64]} on this bot",
        details={"rule_id": rule_id[:64]},
    )


class RuleService:
    def __init__(self, writer: Writer, readers: Readers, clock: WallClock, bots: BotService):
        self._writer = writer
        self._readers = readers
        self._clock = clock
        self._bots = bots

    async def all_rules(self, principal: Principal, bot_id: str) -> list[StoredRule]:
        await self._bots.get(principal, bot_id)
        return await self._readers.read(store.list_rules, bot_id)

    async def create(self, principal: Principal, bot_id: str, spec: RuleSpec) -> StoredRule:
        await self._bots.get_for_write(principal, bot_id)
        existing = await self._readers.read(store.list_rules, bot_id)
        if len(existing) >= MAX_RULES:
            raise invalid("rules", f"a bot may have at most {MAX_RULES} rules", family="bot")
        return await self._writer.write(
            store.create_rule_txn, ids.random_id(RULE), bot_id, spec, self._clock()
        )

    async def replace(
        self, principal: Principal, bot_id: str, rule_id: str, spec: RuleSpec
    ) -> StoredRule:
        await self._bots.get_for_write(principal, bot_id)
        found = await self._writer.write(
            store.replace_rule_txn, bot_id, rule_id, spec, self._clock()
        )
        if found is None:
            raise rule_not_found(rule_id)
        return found

    async def delete(self, principal: Principal, bot_id: str, rule_id: str) -> None:
        await self._bots.get_for_write(principal, bot_id)
        if not await self._writer.write(store.delete_rule_txn, bot_id, rule_id):
            raise rule_not_found(rule_id)

    async def reorder(
        self, principal: Principal, bot_id: str, order: list[str]
    ) -> list[StoredRule]:
        """``order`` lists rule ids first (highest priority) to last; rules not listed
        keep their relative order after them."""
        await self._bots.get_for_write(principal, bot_id)
        if len(set(order)) != len(order):
            raise invalid("order", "must not repeat a rule id", family="bot")
        current = await self._readers.read(store.list_rules, bot_id)
        known = {r.rule.rule_id for r in current}
        for rule_id in order:
            if rule_id not in known:
                raise rule_not_found(rule_id)
        full = order + [r.rule.rule_id for r in current if r.rule.rule_id not in set(order)]
        priorities = dict(zip(full, reorder_priorities(len(full)), strict=True))
        await self._writer.write(store.set_priorities_txn, bot_id, priorities, self._clock())
        return await self._readers.read(store.list_rules, bot_id)
