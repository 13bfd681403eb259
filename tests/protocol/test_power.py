"""protocol.power: thresholds, roles and every Matrix-style rule, allowed and refused."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ApiError, ErrorCode
from protocol.power import (
    DEFAULT_THRESHOLDS,
    ROLE_POWER,
    PowerThresholds,
    check_ban,
    check_can_send,
    check_close,
    check_invite,
    check_kick,
    check_redact,
    check_send_on_behalf,
    check_set_power,
    check_state_change,
    check_unban,
    role_for,
    validate_level,
)

T = DEFAULT_THRESHOLDS


def forbidden(exc: pytest.ExceptionInfo[ApiError]) -> None:
    assert exc.value.code is ErrorCode.SW_ROOM_FORBIDDEN
    assert exc.value.http_status == 403
    assert exc.value.for_family("sg").code is ErrorCode.ROOM_ACCESS_DENIED


# --------------------------------------------------------------------------- thresholds


def test_defaults_match_contract() -> None:
    assert T.to_dict() == {
        "events_default": 0,
        "redact_other": 50,
        "kick": 50,
        "ban": 50,
        "invite": 0,
        "state_default": 50,
        "send_on_behalf": 100,
        "close": 100,
        "power_levels": 100,
    }


def test_round_trip_and_unknown_keys() -> None:
    custom = dataclasses.replace(T, kick=75, invite=50)
    assert PowerThresholds.from_dict(custom.to_dict()) == custom
    assert PowerThresholds.from_dict({"kick": 10, "whatever": "x", "users": {}}) == (
        dataclasses.replace(T, kick=10)
    )
    assert PowerThresholds.from_dict({}) == T


@pytest.mark.parametrize("value", [-1, 101, True, "50", 50.0, None])
def test_from_dict_validates(value: object) -> None:
    with pytest.raises(ApiError) as exc:
        PowerThresholds.from_dict({"ban": value})
    assert exc.value.code is ErrorCode.SW_INVALID_PARAM
    assert "power_levels.ban" in exc.value.message
    with pytest.raises(ApiError) as exc:
        PowerThresholds.from_dict({"ban": value}, family="sg")
    assert exc.value.code is ErrorCode.VALIDATION_ERROR


def test_validate_level() -> None:
    assert validate_level(0) == 0
    assert validate_level(100) == 100
    for bad in (-1, 101, True, 1.0, "1", None):
        with pytest.raises(ApiError):
            validate_level(bad)


def test_thresholds_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        T.kick = 0  # type: ignore[misc]


# --------------------------------------------------------------------------- roles


def test_roles() -> None:
    assert ROLE_POWER["owner"] == 100
    assert ROLE_POWER["member"] == 0
    assert ROLE_POWER["viewer"] == 0
    assert role_for(100, False) == "owner"
    assert role_for(100, True) == "owner"
    assert role_for(0, True) == "viewer"
    assert role_for(60, True) == "viewer"
    assert role_for(50, False) == "moderator"
    assert role_for(99, False) == "moderator"
    assert role_for(49, False) == "member"
    assert role_for(0, False) == "member"


# --------------------------------------------------------------------------- rules


def test_send() -> None:
    check_can_send(0, False, T)
    with pytest.raises(ApiError) as exc:
        check_can_send(100, True, T)
    forbidden(exc)
    strict = dataclasses.replace(T, events_default=10)
    check_can_send(10, False, strict)
    with pytest.raises(ApiError) as exc:
        check_can_send(9, False, strict)
    forbidden(exc)


def test_state_change() -> None:
    check_state_change(50, T)
    with pytest.raises(ApiError) as exc:
        check_state_change(49, T)
    forbidden(exc)


def test_invite() -> None:
    check_invite(0, T)
    with pytest.raises(ApiError) as exc:
        check_invite(49, dataclasses.replace(T, invite=50))
    forbidden(exc)


@pytest.mark.parametrize("check", [check_kick, check_ban])
def test_kick_and_ban(check: Callable[[int, int, PowerThresholds], None]) -> None:
    check(50, 0, T)
    check(100, 99, T)
    for actor, target in [(49, 0), (50, 50), (50, 60), (100, 100), (0, 0)]:
        with pytest.raises(ApiError) as exc:
            check(actor, target, T)
        forbidden(exc)


def test_unban() -> None:
    check_unban(50, T)
    with pytest.raises(ApiError) as exc:
        check_unban(49, T)
    forbidden(exc)


def test_close() -> None:
    check_close(0, True, T)
    check_close(100, False, T)
    with pytest.raises(ApiError) as exc:
        check_close(99, False, T)
    forbidden(exc)


def test_send_on_behalf() -> None:
    check_send_on_behalf(100, T)
    with pytest.raises(ApiError) as exc:
        check_send_on_behalf(99, T)
    forbidden(exc)


def test_redact() -> None:
    check_redact("p-a", "p-a", "p-a", 0, T)  # own event
    check_redact("p-bot", "ai-x", "p-bot", 0, T)  # actor of an on-behalf event
    check_redact("p-mod", "p-b", "p-b", 50, T)  # moderator
    with pytest.raises(ApiError) as exc:
        check_redact("p-a", "p-b", "p-b", 49, T)
    assert exc.value.code is ErrorCode.SW_REDACT_FORBIDDEN
    assert exc.value.http_status == 403
    assert exc.value.for_family("sg").code is ErrorCode.ROOM_ACCESS_DENIED
    with pytest.raises(ApiError):
        check_redact("p-a", "p-b", None, 0, T)


def test_set_power_allowed() -> None:
    check_set_power("p-owner", 100, "p-b", 0, 50, T)
    check_set_power("p-owner", 100, "p-b", 50, 100, T)  # up to own level
    check_set_power("p-owner", 100, "p-b", 99, 0, T)
    check_set_power("p-owner", 100, "p-owner", 100, 0, T)  # self-demotion
    lenient = dataclasses.replace(T, power_levels=50)
    check_set_power("p-mod", 50, "p-b", 0, 50, lenient)
    check_set_power("p-mod", 50, "p-mod", 50, 10, lenient)


@pytest.mark.parametrize(
    ("actor_power", "target_id", "current", "new", "thresholds"),
    [
        (99, "p-b", 0, 10, T),  # below the power_levels threshold
        (50, "p-b", 0, 60, dataclasses.replace(T, power_levels=50)),  # above own level
        (100, "p-b", 100, 50, T),  # peer at own level
        (50, "p-b", 60, 10, dataclasses.replace(T, power_levels=0)),  # target above actor
        (50, "p-a", 50, 60, dataclasses.replace(T, power_levels=0)),  # self-promotion
        (99, "p-a", 99, 0, T),  # self-demotion still needs the threshold
    ],
)
def test_set_power_refused(
    actor_power: int, target_id: str, current: int, new: int, thresholds: PowerThresholds
) -> None:
    with pytest.raises(ApiError) as exc:
        check_set_power("p-a", actor_power, target_id, current, new, thresholds)
    forbidden(exc)


@pytest.mark.parametrize("new", [-1, 101, True, 5.0, "5", None])
def test_set_power_validates_level(new: object) -> None:
    with pytest.raises(ApiError) as exc:
        check_set_power("p-a", 100, "p-b", 0, new, T)  # type: ignore[arg-type]
    assert exc.value.code is ErrorCode.SW_INVALID_PARAM
    assert exc.value.for_family("sg").code is ErrorCode.VALIDATION_ERROR


def test_messages_carry_no_ids() -> None:
    with pytest.raises(ApiError) as exc:
        check_redact("p-secret-actor", "p-secret-sender", None, 0, T)
    assert "secret" not in exc.value.message


levels = st.integers(min_value=0, max_value=100)


@given(
    actor=levels,
    current=levels,
    new=st.integers(min_value=-5, max_value=105),
    self_target=st.booleans(),
    threshold=levels,
)
def test_set_power_property(
    actor: int, current: int, new: int, self_target: bool, threshold: int
) -> None:
    thresholds = dataclasses.replace(T, power_levels=threshold)
    target_id = "p-a" if self_target else "p-b"
    if self_target:
        current = actor  # your current level is your own level
    try:
        check_set_power("p-a", actor, target_id, current, new, thresholds)
    except ApiError:
        return
    assert 0 <= new <= 100
    assert new <= actor
    assert actor >= threshold
    if not self_target:
        assert current < actor


@given(actor=levels, target=levels, threshold=levels)
def test_kick_ban_property(actor: int, target: int, threshold: int) -> None:
    thresholds = dataclasses.replace(T, kick=threshold, ban=threshold)
    for check in (check_kick, check_ban):
        try:
            check(actor, target, thresholds)
        except ApiError:
            assert actor < threshold or target >= actor
        else:
            assert actor >= threshold
            assert target < actor
