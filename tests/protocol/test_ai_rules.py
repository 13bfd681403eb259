"""The pure AI-room rules (protocol.ai): who answers, the prompt, and the draft machine."""

from __future__ import annotations

import itertools
from collections import Counter

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from protocol.ai import (
    Changes,
    ContextLine,
    Draft,
    DraftBook,
    build_prompt,
    default_mode,
    effective_mode,
    responders,
)

ROOMS = ("room-a", "room-b")
AIS = ("ai-1", "ai-2", "ai-3")


def test_default_mode_is_always_only_in_a_dm_with_an_ai() -> None:
    assert default_mode("dm", ["p-alice", "ai-x"]) == "always"
    assert default_mode("dm", ["p-alice", "p-bob"]) == "mention"
    assert default_mode("group", ["p-alice", "ai-x"]) == "mention"


def test_engagement_precedence() -> None:
    modes: dict[str, str | None] = {"": "always", "ai-1": "mention"}
    assert effective_mode("ai-1", modes, None, "mention") == "mention"  # per-AI override
    assert effective_mode("ai-2", modes, "mention", "mention") == "always"  # room-wide
    assert effective_mode("ai-2", {}, "always", "mention") == "always"  # the AI's own
    assert effective_mode("ai-2", {"": None}, None, "always") == "always"  # the default


def test_responders_never_answer_an_ai_and_follow_mentions_or_always() -> None:
    mode = {"ai-1": "always", "ai-2": "mention", "ai-3": "keyword"}.__getitem__
    content = {"body": "hi", "mentions": ["ai-3"]}
    assert responders("p-alice", content, AIS, mode) == ["ai-1", "ai-3"]
    assert responders("ai-2", content, AIS, mode) == []
    assert responders("p-alice", {"mentions": "ai-2"}, AIS, mode) == ["ai-1"]


def test_prompt_roles_names_and_cut() -> None:
    lines = [
        ContextLine("p-a", "Alice", "x" * 400),
        ContextLine("ai-1", "Bot", "earlier answer"),
        ContextLine("p-b", "Bob", "newest"),
    ]
    prompt = build_prompt("be brief", "ai-1", lines, budget_tokens=10_000)
    assert [(m.role, m.content) for m in prompt] == [
        ("system", "be brief"),
        ("user", "Alice: " + "x" * 400),
        ("assistant", "earlier answer"),
        ("user", "Bob: newest"),
    ]
    cut = build_prompt("be brief", "ai-1", lines, budget_tokens=30)
    assert [m.content for m in cut] == ["be brief", "earlier answer", "Bob: newest"]
    tiny = build_prompt("be brief", "ai-1", lines, budget_tokens=1)
    assert [m.content for m in tiny] == ["be brief", "Bob: newest"]  # newest always kept


def test_a_draft_ends_once() -> None:
    book = DraftBook(new_id=lambda: "d1")
    (draft,) = book.human_message("room-a", "e1", ["ai-1"]).start
    assert book.claim_persist(draft.draft_id)
    assert not book.claim_persist(draft.draft_id)
    book.finished(draft.draft_id, "done")
    with pytest.raises(ValueError, match="already ended"):
        book.finished(draft.draft_id, "done")


class DraftBookMachine(RuleBasedStateMachine):
    """Random interleavings of human messages, redactions, stops, engages and endings,
    driven like the runner drives the book."""

    def __init__(self) -> None:
        super().__init__()
        ids = itertools.count()
        self.book = DraftBook(new_id=lambda: f"d{next(ids)}", keep_ended=True)
        self.event_ids = itertools.count()
        self.triggers: dict[str, list[str]] = {room: [] for room in ROOMS}
        self.running: dict[str, Draft] = {}  # drafts whose generation task runs
        self.started: Counter[str] = Counter()
        self.ended: Counter[str] = Counter()
        self.persisted: Counter[str] = Counter()

    def apply(self, changes: Changes) -> None:
        for draft in changes.stop:
            assert draft.draft_id in self.running
            assert draft.stopping
        for draft in changes.start:
            pair = (draft.room_id, draft.ai_id)
            assert pair not in {(d.room_id, d.ai_id) for d in self.running.values()}
            self.running[draft.draft_id] = draft
            self.started[draft.draft_id] += 1

    @rule(room=st.sampled_from(ROOMS), ais=st.sets(st.sampled_from(AIS)))
    def human_message(self, room: str, ais: set[str]) -> None:
        event_id = f"e{next(self.event_ids)}"
        self.triggers[room].append(event_id)
        before = {d.draft_id for d in self.running.values() if d.room_id == room and not d.stopping}
        changes = self.book.human_message(room, event_id, sorted(ais))
        assert {d.draft_id for d in changes.stop} == before  # the room's drafts all stop
        self.apply(changes)

    @rule(room=st.sampled_from(ROOMS), data=st.data())
    def redaction(self, room: str, data: st.DataObject) -> None:
        if not self.triggers[room]:
            return
        event_id = data.draw(st.sampled_from(self.triggers[room]))
        changes = self.book.redaction(room, event_id)
        assert all(d.trigger_event_id == event_id for d in changes.stop)
        self.apply(changes)

    @rule(room=st.sampled_from(ROOMS), ai=st.none() | st.sampled_from(AIS))
    def stop(self, room: str, ai: str | None) -> None:
        changes = self.book.stop(room, ai)
        assert all(d.room_id == room and ai in (None, d.ai_id) for d in changes.stop)
        self.apply(changes)
        named = [d for d in self.running.values() if d.room_id == room and ai in (None, d.ai_id)]
        assert all(d.stopping for d in named)

    @rule(room=st.sampled_from(ROOMS), ai=st.sampled_from(AIS))
    def engage(self, room: str, ai: str) -> None:
        if not self.triggers[room]:
            return
        busy = self.book.busy(room, ai)
        draft = self.book.engage(room, ai, self.triggers[room][-1])
        assert (draft is None) == busy
        if draft is not None:
            self.apply(Changes(start=(draft,)))

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def end(self, data: st.DataObject) -> None:
        draft = data.draw(st.sampled_from(sorted(self.running.values(), key=lambda d: d.draft_id)))
        outcome = "cancelled" if draft.stopping else data.draw(st.sampled_from(["done", "error"]))
        if data.draw(st.booleans()):  # it had text to store
            assert self.book.claim_persist(draft.draft_id)
            self.persisted[draft.draft_id] += 1
            assert not self.book.claim_persist(draft.draft_id)  # never a second event
        del self.running[draft.draft_id]
        changes = self.book.finished(draft.draft_id, outcome)  # type: ignore[arg-type]
        self.ended[draft.draft_id] += 1
        self.apply(changes)

    @invariant()
    def one_generation_per_room_and_ai(self) -> None:
        pairs = [(d.room_id, d.ai_id) for d in self.running.values()]
        assert len(pairs) == len(set(pairs))
        assert {d.draft_id for d in self.book.alive_drafts()} == set(self.running)

    @invariant()
    def at_most_once(self) -> None:
        assert all(n == 1 for n in self.started.values())
        assert all(n == 1 for n in self.ended.values())
        assert all(n == 1 for n in self.persisted.values())

    def teardown(self) -> None:
        while self.running:
            draft = min(self.running.values(), key=lambda d: d.draft_id)
            del self.running[draft.draft_id]
            self.apply(
                self.book.finished(draft.draft_id, "cancelled" if draft.stopping else "done")
            )
            self.ended[draft.draft_id] += 1
        drafts = self.book.drafts()
        assert all(d.outcome in ("done", "cancelled", "error") for d in drafts)
        assert set(self.started) == set(self.ended) == {d.draft_id for d in drafts}
        assert all(n == 1 for n in self.ended.values())


TestDraftBook = DraftBookMachine.TestCase
TestDraftBook.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
