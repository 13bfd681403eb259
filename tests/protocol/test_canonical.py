"""protocol.canonical and the event hash chain in protocol.events."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.canonical import canonical_json, compact_size, content_hash, event_id_for
from protocol.events import (
    Event,
    EventDraft,
    EventType,
    build_event,
    hashed_form,
    verify_event_id,
)

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=40,
)
json_objects = st.dictionaries(text, json_values, max_size=8)


@given(json_values)
def test_canonical_round_trip(value: Any) -> None:
    assert orjson.loads(canonical_json(value)) == value


@given(json_objects, st.randoms(use_true_random=False))
def test_key_order_independent(obj: dict[str, Any], rnd: random.Random) -> None:
    items = list(obj.items())
    rnd.shuffle(items)
    shuffled = dict(items)
    assert canonical_json(shuffled) == canonical_json(obj)
    assert content_hash(shuffled) == content_hash(obj)


def test_canonical_form_is_sorted_and_compact() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": None, "c": "é"}]}) == (
        '{"a":[1,{"c":"é","d":null}],"b":1}'.encode()
    )
    assert compact_size({"a": "é"}) == len('{"a":"é"}'.encode())


def test_canonical_rejects_non_json() -> None:
    with pytest.raises(TypeError):
        canonical_json({"a": object()})
    with pytest.raises(TypeError):
        canonical_json({1: "non-str key"})


def test_content_hash_stable() -> None:
    content = {"msgtype": "swp.text", "body": "hello"}
    h = content_hash(content)
    assert h == content_hash({"body": "hello", "msgtype": "swp.text"})
    assert h.startswith("sha256:")
    assert "=" not in h
    assert len(h) == len("sha256:") + 43
    # A pinned value: the hash must never change across versions.
    assert h == content_hash(orjson.loads(canonical_json(content)))
    assert content_hash({}) == "sha256:RBNvo1WzZ4oRRq0W9-hknpT7T8If536DEMBg9hyq_4o"
    assert content_hash({"body": "hello!"}) != h


def test_event_id_for_rejects_unredacted_form() -> None:
    with pytest.raises(ValueError, match="redacted"):
        event_id_for({"content": {}, "content_hash": "x"})
    with pytest.raises(ValueError, match="content_hash"):
        event_id_for({"room_id": "room-1"})


# --------------------------------------------------------------------------- events

DRAFT = EventDraft(
    room_id="room-abc",
    type=EventType.MESSAGE,
    sender_id="p-alice",
    actor_id="p-alice",
    content={"msgtype": "swp.text", "body": "hi"},
)
PREV = ("evt-parent",)


def _build(draft: EventDraft = DRAFT, **kw: Any) -> Event:
    args: dict[str, Any] = {
        "stream_position": 7,
        "origin_ts_ms": 1_700_000_000_123,
        "prev_event_ids": PREV,
        "prev_depth": 3,
    }
    args.update(kw)
    return build_event(draft, **args)


def test_build_event_fields() -> None:
    ev = _build()
    assert ev.event_id.startswith("evt-")
    assert ev.depth == 4
    assert ev.content_hash == content_hash(DRAFT.content)
    assert ev.prev_event_ids == PREV
    assert verify_event_id(ev)


def test_event_id_stable_for_identical_inputs() -> None:
    a = _build()
    b = _build(dataclasses.replace(DRAFT, content=dict(reversed(DRAFT.content.items()))))
    assert a.event_id == b.event_id
    # stream_position orders delivery; it is not part of the id.
    assert _build(stream_position=99).event_id == a.event_id


@pytest.mark.parametrize(
    ("draft_changes", "build_changes"),
    [
        ({"room_id": "room-other"}, {}),
        ({"type": EventType.EDIT}, {}),
        ({"sender_id": "p-bob"}, {}),
        ({"actor_id": "p-bot"}, {}),
        ({"content": {"msgtype": "swp.text", "body": "hi!"}}, {}),
        ({"relates_to": "evt-target"}, {}),
        ({}, {"origin_ts_ms": 1_700_000_000_124}),
        ({}, {"prev_depth": 4}),
        ({}, {"prev_event_ids": ("evt-other",)}),
        ({}, {"prev_event_ids": ()}),
    ],
)
def test_event_id_changes_with_any_hashed_field(
    draft_changes: dict[str, Any], build_changes: dict[str, Any]
) -> None:
    base = _build()
    changed = _build(dataclasses.replace(DRAFT, **draft_changes), **build_changes)
    assert changed.event_id != base.event_id
    assert verify_event_id(changed)


def test_event_id_survives_content_erasure() -> None:
    ev = _build()
    redacted = dataclasses.replace(
        ev, content={}, redacted_at_ms=1_700_000_001_000, redacted_by="p-mod"
    )
    assert redacted.event_id == ev.event_id
    assert verify_event_id(redacted)


@pytest.mark.parametrize(
    "changes",
    [
        {"sender_id": "p-mallory"},
        {"actor_id": "p-mallory"},
        {"room_id": "room-other"},
        {"type": EventType.REDACTION},
        {"origin_ts_ms": 1},
        {"depth": 1},
        {"prev_event_ids": ()},
        {"content_hash": content_hash({"body": "forged"})},
        {"relates_to": "evt-x"},
    ],
)
def test_tampering_breaks_verification(changes: dict[str, Any]) -> None:
    ev = _build()
    assert not verify_event_id(dataclasses.replace(ev, **changes))


def test_hashed_form_has_no_content() -> None:
    form = hashed_form(
        room_id="room-1",
        event_type="swp.room.message",
        sender_id="p-a",
        actor_id="p-a",
        origin_ts_ms=1,
        depth=1,
        prev_event_ids=(),
        content_hash=content_hash({}),
        relates_to=None,
    )
    assert "content" not in form
    assert "relates_to" not in form
    assert event_id_for(form).startswith("evt-")


@given(
    content=json_objects,
    sender=st.sampled_from(["p-a", "p-b", "ai-c"]),
    ts=st.integers(min_value=0, max_value=2**53),
    prev_depth=st.integers(min_value=0, max_value=10**6),
)
def test_build_event_always_verifies(
    content: dict[str, Any], sender: str, ts: int, prev_depth: int
) -> None:
    draft = dataclasses.replace(DRAFT, sender_id=sender, actor_id=sender, content=content)
    ev = _build(draft, origin_ts_ms=ts, prev_depth=prev_depth)
    assert verify_event_id(ev)
    assert verify_event_id(dataclasses.replace(ev, content={}))
    assert not verify_event_id(dataclasses.replace(ev, sender_id=sender + "x"))
