"""Power levels: per-room thresholds and the rules that use them (CONTRACT section 6).

Levels are integers 0..100. The room creator gets 100, everyone else 0. Each
room carries a :class:`PowerThresholds` table; the rules follow Matrix (room
version 11 authorisation rules, ``m.room.power_levels``):

- kick / ban need the threshold *and* a target strictly below the actor;
- nobody sets anyone above their own level, and nobody changes the level of
  another member at or above their own level (self-demotion is allowed);
- redacting your own event is always allowed, others' needs ``redact_other``.

Every ``check_*`` returns ``None`` when allowed and raises
:class:`~protocol.errors.ApiError` when refused — ``SW_ROOM_FORBIDDEN`` (403)
for insufficient power, ``SW_REDACT_FORBIDDEN`` (403) for redactions. Callers
on ScaiGrid routes translate with ``ApiError.for_family("sg")``. Messages
mention levels and thresholds only, never room or event content.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from protocol.errors import ApiError, ErrorCode, Family, invalid

__all__ = [
    "CREATOR_POWER",
    "DEFAULT_POWER",
    "DEFAULT_THRESHOLDS",
    "MAX_POWER",
    "MIN_POWER",
    "MODERATOR_POWER",
    "ROLE_POWER",
    "PowerThresholds",
    "check_ban",
    "check_can_send",
    "check_close",
    "check_invite",
    "check_kick",
    "check_redact",
    "check_send_on_behalf",
    "check_set_power",
    "check_state_change",
    "check_unban",
    "role_for",
    "validate_level",
]

MIN_POWER = 0
MAX_POWER = 100
CREATOR_POWER = 100
DEFAULT_POWER = 0
MODERATOR_POWER = 50

ROLE_POWER: dict[str, int] = {"owner": 100, "moderator": 50, "member": 0, "viewer": 0}
"""ScaiGrid role → power level. ``viewer`` also sets the member's read-only flag."""


def validate_level(value: object, field: str = "power_level", *, family: Family = "sw") -> int:
    """An integer power level in 0..100 (booleans refused), else a validation ApiError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, "must be an integer", family=family)
    if not MIN_POWER <= value <= MAX_POWER:
        raise invalid(field, f"must be between {MIN_POWER} and {MAX_POWER}", family=family)
    return value


@dataclass(frozen=True, slots=True)
class PowerThresholds:
    """The power a member needs for each kind of action in one room."""

    events_default: int = 0  # send messages and reactions
    redact_other: int = 50  # redact someone else's event
    kick: int = 50
    ban: int = 50  # ban and unban
    invite: int = 0
    state_default: int = 50  # room name and topic
    send_on_behalf: int = 100
    close: int = 100  # close / archive (the creator may always)
    power_levels: int = 100  # change members' levels or these thresholds

    def __post_init__(self) -> None:
        for f in fields(self):
            validate_level(getattr(self, f.name), f"power_levels.{f.name}")

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, family: Family = "sw") -> PowerThresholds:
        """Build from a mapping; unknown keys are ignored, missing keys take defaults."""
        known = {f.name for f in fields(cls)}
        values = {
            key: validate_level(value, f"power_levels.{key}", family=family)
            for key, value in data.items()
            if key in known
        }
        return cls(**values)


DEFAULT_THRESHOLDS = PowerThresholds()


def role_for(power: int, read_only: bool) -> str:
    """The ScaiGrid role label of a member: owner, viewer, moderator or member."""
    if power >= ROLE_POWER["owner"]:
        return "owner"
    if read_only:
        return "viewer"
    if power >= MODERATOR_POWER:
        return "moderator"
    return "member"


def _forbidden(action: str, needed: int, actual: int) -> ApiError:
    return ApiError(
        ErrorCode.SW_ROOM_FORBIDDEN,
        f"{action} needs power level {needed} (you have {actual})",
        details={"required_power": needed, "power_level": actual},
    )


def _require(action: str, actor_power: int, needed: int) -> None:
    if actor_power < needed:
        raise _forbidden(action, needed, actor_power)


def check_can_send(actor_power: int, read_only: bool, thresholds: PowerThresholds) -> None:
    """Send a message or reaction: not read-only, and ≥ ``events_default``."""
    if read_only:
        raise ApiError(ErrorCode.SW_ROOM_FORBIDDEN, "read-only members cannot send")
    _require("sending", actor_power, thresholds.events_default)


def check_state_change(actor_power: int, thresholds: PowerThresholds) -> None:
    """Change the room name or topic: ≥ ``state_default``."""
    _require("changing room state", actor_power, thresholds.state_default)


def check_invite(actor_power: int, thresholds: PowerThresholds) -> None:
    """Invite or add a member: ≥ ``invite``."""
    _require("inviting", actor_power, thresholds.invite)


def _check_over_target(action: str, actor_power: int, target_power: int, needed: int) -> None:
    _require(action, actor_power, needed)
    if target_power >= actor_power:
        raise ApiError(
            ErrorCode.SW_ROOM_FORBIDDEN,
            f"{action} needs a target below your own power level",
            details={"power_level": actor_power, "target_power_level": target_power},
        )


def check_kick(actor_power: int, target_power: int, thresholds: PowerThresholds) -> None:
    """Kick: ≥ ``kick`` and the target strictly below the actor."""
    _check_over_target("kicking", actor_power, target_power, thresholds.kick)


def check_ban(actor_power: int, target_power: int, thresholds: PowerThresholds) -> None:
    """Ban: ≥ ``ban`` and the target strictly below the actor."""
    _check_over_target("banning", actor_power, target_power, thresholds.ban)


def check_unban(actor_power: int, thresholds: PowerThresholds) -> None:
    """Unban: ≥ ``ban``."""
    _require("unbanning", actor_power, thresholds.ban)


def check_close(actor_power: int, is_creator: bool, thresholds: PowerThresholds) -> None:
    """Close or archive the room: the creator, or ≥ ``close``."""
    if is_creator:
        return
    _require("closing the room", actor_power, thresholds.close)


def check_send_on_behalf(actor_power: int, thresholds: PowerThresholds) -> None:
    """Send as another participant: ≥ ``send_on_behalf``."""
    _require("sending on behalf of another participant", actor_power, thresholds.send_on_behalf)


def check_redact(
    actor_id: str,
    event_sender_id: str,
    event_actor_id: str | None,
    actor_power: int,
    thresholds: PowerThresholds,
) -> None:
    """Redact an event: own events (sender, or actor of an on-behalf event) always;
    others' need ≥ ``redact_other`` (403 ``SW_REDACT_FORBIDDEN``)."""
    if actor_id in (event_sender_id, event_actor_id):
        return
    if actor_power < thresholds.redact_other:
        raise ApiError(
            ErrorCode.SW_REDACT_FORBIDDEN,
            f"redacting another participant's event needs power level "
            f"{thresholds.redact_other} (you have {actor_power})",
            details={"required_power": thresholds.redact_other, "power_level": actor_power},
        )


def check_set_power(
    actor_id: str,
    actor_power: int,
    target_id: str,
    target_current: int,
    target_new: int,
    thresholds: PowerThresholds,
) -> None:
    """Change a member's level (Matrix rules).

    - ``target_new`` must be an integer 0..100 (``SW_INVALID_PARAM``);
    - the actor needs ≥ ``power_levels``;
    - nobody sets a level above their own;
    - nobody changes another member whose current level is ≥ their own
      (changing yourself — i.e. self-demotion — is allowed).
    """
    new = validate_level(target_new)
    _require("changing power levels", actor_power, thresholds.power_levels)
    if new > actor_power:
        raise ApiError(
            ErrorCode.SW_ROOM_FORBIDDEN,
            f"cannot set a power level above your own ({actor_power})",
            details={"power_level": actor_power, "requested_power_level": new},
        )
    if target_id != actor_id and target_current >= actor_power:
        raise ApiError(
            ErrorCode.SW_ROOM_FORBIDDEN,
            "cannot change the power level of a member at or above your own level",
            details={"power_level": actor_power, "target_power_level": target_current},
        )
