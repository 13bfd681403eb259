"""Escalation rules (seed 002 "Escalation", CONTRACT 13): validation and triggers.

Rules are evaluated by priority (higher first, ties by creation order) and the
first that fires wins. ``keyword`` and ``explicit`` rules are checked before
the model is called (their ``message`` is then the whole answer); ``intent``,
``sentiment`` and ``confidence`` rules after the answer.

Sentiment scores are computed outside (a lexicon analyser, VADER) and passed in
as :class:`TurnFacts`; so are the retrieval scores. Everything here is pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import regex

from protocol.errors import ApiError, ErrorCode, invalid
from protocol.validation import opt_int, opt_str, req_str

TRIGGERS = ("keyword", "intent", "sentiment", "confidence", "explicit")
PRE_TRIGGERS = frozenset({"keyword", "explicit"})
POST_TRIGGERS = frozenset({"intent", "sentiment", "confidence"})
ACTIONS = ("email", "webhook", "slack", "scaiqueue")
DEFAULT_PRIORITY = 50
DEFAULT_MESSAGE = "Let me connect you with a person from our team who can help."
MAX_KEYWORDS = 50
MAX_PATTERN = 500
REGEX_TIMEOUT_S = 0.05  # a keyword regex may take at most this long on one message
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}$")
_URL = re.compile(r"^https?://[^\s]{1,2000}$")


def trigger_invalid(field: str, message: str) -> ApiError:
    return ApiError(
        ErrorCode.ESCALATION_TRIGGER_INVALID,
        f"{field}: {message}",
        details=[{"field": field, "message": message}],
    )


@dataclass(frozen=True, slots=True)
class RuleSpec:
    name: str
    priority: int
    trigger_type: str
    trigger_config: dict[str, Any]
    action_type: str
    action_config: dict[str, Any]
    message: str


@dataclass(frozen=True, slots=True)
class Rule:
    rule_id: str
    priority: int
    seq: int  # creation order (ties)
    spec: RuleSpec


# --------------------------------------------------------------------------- validation


def _keyword(cfg: Mapping[str, Any]) -> dict[str, Any]:
    words = cfg.get("keywords")
    if not isinstance(words, list) or not 1 <= len(words) <= MAX_KEYWORDS:
        raise trigger_invalid(
            "trigger_config.keywords", f"must be a list of 1 to {MAX_KEYWORDS} strings"
        )
    mode = cfg.get("match_mode", "substring")
    if mode not in ("substring", "regex"):
        raise trigger_invalid("trigger_config.match_mode", "must be substring or regex")
    for i, word in enumerate(words):
        label = f"trigger_config.keywords[{i}]"
        if not isinstance(word, str) or not word.strip() or len(word) > MAX_PATTERN:
            raise trigger_invalid(label, f"must be a non-empty string of at most {MAX_PATTERN}")
        if mode == "regex":
            try:
                regex.compile(word, regex.IGNORECASE | regex.V0)
            except (regex.error, ValueError, OverflowError, RecursionError) as exc:
                raise trigger_invalid(label, f"is not a valid regular expression ({exc})") from None
    return {"keywords": list(words), "match_mode": mode}


def _number(cfg: Mapping[str, Any], key: str, lo: float, hi: float, default: float | None) -> Any:
    value = cfg.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise trigger_invalid(f"trigger_config.{key}", f"must be a number from {lo} to {hi}")
    return float(value)


def _intent(cfg: Mapping[str, Any]) -> dict[str, Any]:
    intents = cfg.get("intents")
    if not isinstance(intents, list) or not 1 <= len(intents) <= MAX_KEYWORDS:
        raise trigger_invalid("trigger_config.intents", "must be a list of 1 to 50 intent labels")
    for i, label in enumerate(intents):
        if not isinstance(label, str) or not _words(label) or len(label) > 100:
            raise trigger_invalid(f"trigger_config.intents[{i}]", "must be a label such as refund")
    return {"intents": list(intents), "threshold": _number(cfg, "threshold", 0, 1, 0.5)}


def _sentiment(cfg: Mapping[str, Any]) -> dict[str, Any]:
    window = cfg.get("window_messages", 3)
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 20:
        raise trigger_invalid("trigger_config.window_messages", "must be an integer from 1 to 20")
    return {"threshold": _number(cfg, "threshold", -1, 1, -0.6), "window_messages": window}


def _confidence(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {"threshold": _number(cfg, "threshold", 0, 1, None)}


_TRIGGER_KEYS = {
    "keyword": {"keywords", "match_mode"},
    "intent": {"intents", "threshold"},
    "sentiment": {"threshold", "window_messages"},
    "confidence": {"threshold"},
    "explicit": set(),
}


def parse_trigger(trigger_type: object, config: object) -> dict[str, Any]:
    if trigger_type not in TRIGGERS:
        raise trigger_invalid("trigger_type", f"must be one of {', '.join(TRIGGERS)}")
    assert isinstance(trigger_type, str)
    cfg = {} if config is None else config
    if not isinstance(cfg, Mapping):
        raise trigger_invalid("trigger_config", "must be an object")
    for key in cfg:
        if key not in _TRIGGER_KEYS[trigger_type]:
            raise trigger_invalid(f"trigger_config.{str(key)[:64]}", f"is not a {trigger_type} key")
    if trigger_type == "keyword":
        return _keyword(cfg)
    if trigger_type == "intent":
        return _intent(cfg)
    if trigger_type == "sentiment":
        return _sentiment(cfg)
    if trigger_type == "confidence":
        return _confidence(cfg)
    return {}


def _url(cfg: Mapping[str, Any], key: str) -> str:
    value = req_str(cfg, key, max_len=2000, family="bot")
    if not _URL.match(value):
        raise invalid(f"action_config.{key}", "must be an http(s) URL", family="bot")
    return value


def parse_action(action_type: object, config: object) -> dict[str, Any]:
    if action_type not in ACTIONS:
        raise invalid("action_type", f"must be one of {', '.join(ACTIONS)}", family="bot")
    cfg = {} if config is None else config
    if not isinstance(cfg, Mapping):
        raise invalid("action_config", "must be an object", family="bot")
    try:
        return _action(str(action_type), cfg)
    except ApiError as exc:
        if exc.message.startswith("action_config."):
            raise
        key, _, why = exc.message.partition(": ")
        raise invalid(f"action_config.{key}", why, family="bot") from None


def _action(action_type: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    if action_type == "webhook":
        url = _url(cfg, "url")
        return {"url": url, "secret": req_str(cfg, "secret", max_len=256, min_len=8, family="bot")}
    if action_type == "slack":
        return {"webhook_url": _url(cfg, "webhook_url")}
    if action_type == "email":
        to = cfg.get("to")
        recipients = [to] if isinstance(to, str) else to
        if not isinstance(recipients, list) or not 1 <= len(recipients) <= 10:
            raise invalid("action_config.to", "must be an address or 1-10 addresses", family="bot")
        for i, addr in enumerate(recipients):
            if not isinstance(addr, str) or not _EMAIL.match(addr):
                raise invalid(f"action_config.to[{i}]", "is not an email address", family="bot")
        subject = opt_str(cfg, "subject", max_len=200, family="bot")
        return {"to": recipients, "subject": subject or "ScaiBot escalation"}
    queue = opt_str(cfg, "queue", max_len=64, min_len=1, family="bot")
    return {"queue": queue or "default"}


def public_action_config(action_type: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The action config as the API shows it: a webhook's secret is write-only."""
    shown = dict(config)
    if action_type == "webhook" and "secret" in shown:
        del shown["secret"]
        shown["secret_set"] = True
    return shown


def parse_rule(body: Mapping[str, Any]) -> RuleSpec:
    priority = opt_int(body, "priority", lo=-1_000_000, hi=1_000_000, family="bot")
    return RuleSpec(
        name=req_str(body, "name", max_len=200, family="bot"),
        priority=DEFAULT_PRIORITY if priority is None else priority,
        trigger_config=parse_trigger(body.get("trigger_type"), body.get("trigger_config")),
        trigger_type=str(body.get("trigger_type")),
        action_config=parse_action(body.get("action_type"), body.get("action_config")),
        action_type=str(body.get("action_type")),
        message=opt_str(body, "message", max_len=2000, min_len=1, family="bot") or DEFAULT_MESSAGE,
    )


def ordered(rules: Sequence[Rule]) -> list[Rule]:
    """Evaluation order: higher priority first, ties by creation order."""
    return sorted(rules, key=lambda r: (-r.priority, r.seq))


def reorder_priorities(count: int) -> list[int]:
    """Priorities for ``count`` rules listed first-to-last: 10 apart, the first highest."""
    return [10 * (count - i) for i in range(count)]


# --------------------------------------------------------------------------- triggers

# "The visitor asks for a person": intent detection over a small, documented set
# of request forms (not a sentiment lexicon).
EXPLICIT_PATTERNS = (
    r"\b(talk|speak|chat)\s+(to|with)\s+(a|an|some|the)?\s*"
    r"(human|person|people|someone|somebody|agent|representative|operator|staff)\b",
    r"\b(real|live|actual)\s+(human|person|agent|operator)\b",
    r"\bhuman\s+(agent|support|being|help)\b",
    r"\b(customer\s+service|support\s+team)\s+(agent|representative)\b",
    r"\b(transfer|connect|escalate)\s+(me|this)\b",
    r"\b(need|want)\s+(a|an)\s+(human|person|agent|representative)\b",
)
_EXPLICIT = [re.compile(p, re.IGNORECASE) for p in EXPLICIT_PATTERNS]

# "The model says it does not know" (confidence trigger).
UNSURE_PATTERNS = (
    r"\bI\s+(do\s+not|don[\u2019']t)\s+know\b",
    r"\bI[\u2019']?m\s+not\s+sure\b",
    r"\bI\s+am\s+not\s+sure\b",
    r"\bI\s+(cannot|can[\u2019']t)\s+(find|answer|help with)\b",
    r"\bI\s+(do\s+not|don[\u2019']t)\s+have\s+(that|this|enough)\s+information\b",
    r"\bno\s+information\s+(about|on)\b",
)
_UNSURE = [re.compile(p, re.IGNORECASE) for p in UNSURE_PATTERNS]
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def asks_for_person(message: str) -> bool:
    return any(p.search(message) for p in _EXPLICIT)


def says_unsure(answer: str) -> bool:
    return any(p.search(answer) for p in _UNSURE)


def keyword_fires(config: Mapping[str, Any], message: str) -> bool:
    """Case-insensitive substring, or regex search bounded by ``REGEX_TIMEOUT_S``."""
    if config.get("match_mode") == "regex":
        for pattern in config["keywords"]:
            try:
                if regex.search(
                    pattern, message, regex.IGNORECASE, timeout=REGEX_TIMEOUT_S, concurrent=True
                ):
                    return True
            except TimeoutError:
                continue  # a pattern too slow for this message does not fire
        return False
    text = message.casefold()
    return any(word.casefold() in text for word in config["keywords"])


def intent_score(label: str, message: str) -> float:
    """The share of the label's words found in the message (5-letter prefix match).

    ``cancel_subscription`` against "how do I cancel my subscriptions" → 1.0.
    Intent labels are matched lexically; no model classifier runs.
    """
    wanted = _words(label)
    have = {w[:5] for w in _words(message)}
    if not wanted:
        return 0.0
    return sum(1 for w in wanted if w[:5] in have) / len(wanted)


@dataclass(frozen=True, slots=True)
class TurnFacts:
    message: str
    # VADER compound scores of the visitor's messages, oldest first, this one last.
    sentiments: Sequence[float] = ()
    answer: str | None = None
    knowledge_enabled: bool = False
    retrieval_scores: Sequence[float] = field(default_factory=tuple)
    score_threshold: float = 0.3


def confidence(facts: TurnFacts) -> float:
    """0 when the model says it does not know; else the best retrieval score with
    knowledge on; else 1."""
    if facts.answer is not None and says_unsure(facts.answer):
        return 0.0
    if facts.knowledge_enabled:
        return max(facts.retrieval_scores, default=0.0)
    return 1.0


def fires(rule: Rule, facts: TurnFacts) -> bool:
    cfg = rule.spec.trigger_config
    kind = rule.spec.trigger_type
    if kind == "keyword":
        return keyword_fires(cfg, facts.message)
    if kind == "explicit":
        return asks_for_person(facts.message)
    if kind == "intent":
        return any(intent_score(i, facts.message) >= cfg["threshold"] for i in cfg["intents"])
    if kind == "sentiment":
        window = list(facts.sentiments)[-int(cfg["window_messages"]) :]
        return bool(window) and sum(window) / len(window) <= cfg["threshold"]
    if kind == "confidence":
        threshold = cfg.get("threshold")
        limit = facts.score_threshold if threshold is None else threshold
        return confidence(facts) < limit
    return False


def has_regex(rules: Sequence[Rule]) -> bool:
    """Whether evaluating ``rules`` may run a (time-bounded) regular expression."""
    return any(r.spec.trigger_config.get("match_mode") == "regex" for r in rules)


def first_firing(rules: Sequence[Rule], facts: TurnFacts, *, stage: frozenset[str]) -> Rule | None:
    """The first rule of ``stage`` (PRE_TRIGGERS or POST_TRIGGERS) that fires."""
    for rule in ordered(rules):
        if rule.spec.trigger_type in stage and fires(rule, facts):
            return rule
    return None
