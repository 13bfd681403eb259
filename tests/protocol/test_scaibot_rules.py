"""protocol.scaibot: bot config, escalation rules and triggers, embed tokens, SSE framing."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ApiError, ErrorCode
from protocol.scaibot import embed
from protocol.scaibot.bots import SLUG_RE, parse_bot_config
from protocol.scaibot.escalation import (
    POST_TRIGGERS,
    PRE_TRIGGERS,
    Rule,
    TurnFacts,
    asks_for_person,
    first_firing,
    intent_score,
    keyword_fires,
    parse_rule,
    parse_trigger,
    public_action_config,
    says_unsure,
)
from protocol.scaibot.sse import decode_events, encode_event

SCAIQUEUE = {"action_type": "scaiqueue"}


def rule(trigger_type: str, config: dict[str, object], priority: int = 50, seq: int = 1) -> Rule:
    spec = parse_rule(
        {"name": "r", "trigger_type": trigger_type, "trigger_config": config, **SCAIQUEUE}
    )
    return Rule(f"esc_{seq}", priority, seq, dataclasses.replace(spec, priority=priority))


# ------------------------------------------------------------------ bot config


def test_bot_defaults() -> None:
    c = parse_bot_config({"name": "N", "slug": "nn", "model": "dev/echo"}, with_status=True)
    assert c.display_name == "N"
    assert (c.max_tokens_per_response, c.max_context_messages) == (500, 20)
    assert (c.knowledge_enabled, c.knowledge_mode, c.status) == (False, "managed", "draft")
    assert c.knowledge_settings.top_k == 5


@given(st.text(max_size=70))
def test_slug_rule_matches_the_contract(slug: str) -> None:
    body = {"name": "N", "slug": slug, "model": "m"}
    if SLUG_RE.match(slug):
        assert parse_bot_config(body, with_status=True).slug == slug
    else:
        with pytest.raises(ApiError) as info:
            parse_bot_config(body, with_status=True)
        assert info.value.code is ErrorCode.VALIDATION_ERROR


# ------------------------------------------------------------------ rules


def test_rule_defaults_and_secret_is_write_only() -> None:
    spec = parse_rule(
        {
            "name": "w",
            "trigger_type": "explicit",
            "action_type": "webhook",
            "action_config": {"url": "http://127.0.0.1:9/x", "secret": "s3cret-value"},
        }
    )
    assert spec.priority == 50
    assert spec.message
    shown = public_action_config(spec.action_type, spec.action_config)
    assert shown == {"url": "http://127.0.0.1:9/x", "secret_set": True}


@pytest.mark.parametrize(
    ("trigger_type", "config", "field"),
    [
        (
            "keyword",
            {"keywords": ["(unclosed"], "match_mode": "regex"},
            "trigger_config.keywords[0]",
        ),
        ("keyword", {"keywords": []}, "trigger_config.keywords"),
        ("keyword", {"keywords": ["a"], "match_mode": "glob"}, "trigger_config.match_mode"),
        ("sentiment", {"threshold": -2}, "trigger_config.threshold"),
        ("sentiment", {"window_messages": 0}, "trigger_config.window_messages"),
        ("intent", {"intents": []}, "trigger_config.intents"),
        ("confidence", {"threshold": 1.5}, "trigger_config.threshold"),
        ("explicit", {"x": 1}, "trigger_config.x"),
        ("telepathy", {}, "trigger_type"),
    ],
)
def test_bad_triggers_are_escalation_trigger_invalid(
    trigger_type: str, config: dict[str, object], field: str
) -> None:
    with pytest.raises(ApiError) as info:
        parse_trigger(trigger_type, config)
    assert info.value.code is ErrorCode.ESCALATION_TRIGGER_INVALID
    assert info.value.message.startswith(field)


@pytest.mark.parametrize(
    ("action_type", "config", "field"),
    [
        ("webhook", {"url": "ftp://x", "secret": "12345678"}, "action_config.url"),
        ("webhook", {"url": "http://x"}, "action_config.secret"),
        ("slack", {}, "action_config.webhook_url"),
        ("email", {"to": "not-an-address"}, "action_config.to[0]"),
        ("pager", {}, "action_type"),
    ],
)
def test_bad_actions_are_validation_errors(
    action_type: str, config: dict[str, object], field: str
) -> None:
    body = {"name": "r", "trigger_type": "explicit", "action_type": action_type}
    with pytest.raises(ApiError) as info:
        parse_rule({**body, "action_config": config})
    assert info.value.code is ErrorCode.VALIDATION_ERROR
    assert info.value.message.startswith(field)


def test_keyword_substring_and_regex_are_case_insensitive() -> None:
    assert keyword_fires({"keywords": ["Refund"], "match_mode": "substring"}, "my REFUND please")
    assert not keyword_fires({"keywords": ["refund"], "match_mode": "substring"}, "hello")
    regex_cfg = {"keywords": [r"\bcancel\w*\b"], "match_mode": "regex"}
    assert keyword_fires(regex_cfg, "I want CANCELLATION")
    assert not keyword_fires(regex_cfg, "keep it")


def test_a_pathological_regex_is_cut_off_by_its_time_bound() -> None:
    cfg = parse_trigger("keyword", {"keywords": [r"(a|aa)+$"], "match_mode": "regex"})
    # Catastrophic backtracking: without the timeout this would run for ages.
    assert keyword_fires(cfg, "a" * 5000 + "b") is False


def test_explicit_and_unsure_phrases() -> None:
    assert asks_for_person("Can I talk to a human please?")
    assert asks_for_person("I need a real person")
    assert not asks_for_person("What are your opening hours?")
    assert says_unsure("Sorry, I don't know that.")
    assert says_unsure("I\u2019m not sure about this")
    assert not says_unsure("Refunds take 14 days.")


def test_intent_score_is_the_share_of_label_words_present() -> None:
    assert intent_score("cancel_subscription", "how do I cancel my subscriptions?") == 1.0
    assert intent_score("cancel_subscription", "cancel the order") == 0.5
    assert intent_score("refund", "hello") == 0.0


def test_priority_then_creation_order_and_stages() -> None:
    low = rule("keyword", {"keywords": ["help"]}, priority=10, seq=1)
    high_late = rule("keyword", {"keywords": ["help"]}, priority=90, seq=3)
    high_early = rule("keyword", {"keywords": ["help"]}, priority=90, seq=2)
    facts = TurnFacts(message="help me")
    assert first_firing([low, high_late, high_early], facts, stage=PRE_TRIGGERS) is high_early
    assert first_firing([low], facts, stage=POST_TRIGGERS) is None


def test_sentiment_mean_over_window() -> None:
    r = rule("sentiment", {"threshold": -0.5, "window_messages": 2})
    stage = POST_TRIGGERS
    assert first_firing([r], TurnFacts("x", sentiments=[0.9, -0.8, -0.7]), stage=stage) is r
    assert first_firing([r], TurnFacts("x", sentiments=[-0.9, 0.2, -0.7]), stage=stage) is None


def test_confidence_from_retrieval_or_the_model_saying_it_does_not_know() -> None:
    r = rule("confidence", {})
    post = POST_TRIGGERS

    def kb(scores: list[float]) -> TurnFacts:
        return TurnFacts("q", answer="a", knowledge_enabled=True, retrieval_scores=scores)

    assert first_firing([r], kb([]), stage=post)
    assert first_firing([r], kb([0.2]), stage=post)
    assert not first_firing([r], kb([0.8]), stage=post)
    assert first_firing([r], TurnFacts("q", answer="I don't know"), stage=post)
    assert not first_firing([r], TurnFacts("q", answer="Yes."), stage=post)


# ------------------------------------------------------------------ embed tokens

SECRET = b"k" * 64
CLAIMS = embed.EmbedClaims("sbk_1", "bot_1", "vis_1", 10_000)


def test_token_round_trip_and_expiry() -> None:
    token = embed.sign(SECRET, CLAIMS)
    assert token.startswith("sbt_")
    assert embed.verify(SECRET, token, 9_999) == CLAIMS
    with pytest.raises(ApiError) as info:
        embed.verify(SECRET, token, 10_000)
    assert info.value.code is ErrorCode.EMBED_TOKEN_EXPIRED
    with pytest.raises(ApiError) as info:
        embed.verify(b"other" * 10, token, 0)
    assert info.value.code is ErrorCode.EMBED_TOKEN_INVALID


@given(st.integers(min_value=4, max_value=200), st.characters(codec="ascii"))
def test_any_tampered_character_is_refused(index: int, char: str) -> None:
    token = embed.sign(SECRET, CLAIMS)
    i = index % len(token)
    tampered = token[:i] + char + token[i + 1 :]
    if tampered == token:
        return
    with pytest.raises(ApiError) as info:
        embed.verify(SECRET, tampered, 0)
    assert info.value.code is ErrorCode.EMBED_TOKEN_INVALID


# ------------------------------------------------------------------ SSE


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["start", "token", "citation", "escalation", "done", "error"]),
            st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=3),
        ),
        max_size=10,
    )
)
def test_sse_framing_round_trips(events: list[tuple[str, dict[str, str]]]) -> None:
    raw = b"".join(encode_event(name, data) for name, data in events).decode()
    assert decode_events(raw) == events


def test_sse_shape() -> None:
    assert encode_event("token", {"delta": "a\nb"}) == b'event: token\ndata: {"delta":"a\\nb"}\n\n'
    with pytest.raises(ValueError, match="not a chat event"):
        encode_event("bogus", {})
