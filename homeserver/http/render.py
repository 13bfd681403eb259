"""JSON shapes of rooms, members and participants (CONTRACT sections 2 and 6)."""

from __future__ import annotations

from typing import Any

from protocol.power import role_for
from protocol.timefmt import iso_ms, iso_or_none
from storage.participants import ApiKey, Participant
from storage.rooms import Membership, Room


def participant(p: Participant | None, participant_id: str) -> dict[str, Any]:
    if p is None:
        return {"id": participant_id, "participant_id": participant_id}
    return {
        "id": p.participant_id,
        "participant_id": p.participant_id,
        "username": p.username,
        "display_name": p.display_name,
        "participant_type": p.participant_type,
        "avatar_url": p.avatar_url,
        "bio": p.bio,
        "is_admin": p.is_admin,
        "tenant_id": p.tenant_id,
        "created_at": iso_ms(p.created_at_ms),
    }


def room(r: Room) -> dict[str, Any]:
    return {
        "id": r.room_id,
        "room_id": r.room_id,
        "room_type": r.room_type,
        "name": r.name,
        "topic": r.topic,
        "description": r.topic,
        "is_public": r.is_public,
        "creator_id": r.creator_id,
        "state": r.state,
        "member_count": r.member_count,
        "power_levels": r.thresholds,
        "created_at": iso_ms(r.created_at_ms),
        "updated_at": iso_ms(r.updated_at_ms),
    }


def member(m: Membership, p: Participant | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "participant_id": m.participant_id,
        "id": m.participant_id,
        "membership": m.membership,
        "power_level": m.power_level,
        "role": role_for(m.power_level, m.read_only),
        "read_only": m.read_only,
        "joined_at": iso_or_none(m.joined_at_ms),
        "changed_by": m.changed_by,
    }
    if p is not None:
        body["type"] = "user" if p.participant_type == "human" else p.participant_type
        body["participant"] = participant(p, m.participant_id)
    return body


def api_key(k: ApiKey) -> dict[str, Any]:
    return {
        "id": k.key_id,
        "name": k.name,
        "prefix": k.prefix,
        "created_at": iso_ms(k.created_at_ms),
        "expires_at": iso_or_none(k.expires_at_ms),
        "scopes": list(k.scopes),
    }
