"""The error tree: one namespace, families, statuses, and the family twins."""

from __future__ import annotations

import pytest

from protocol.errors import (
    ApiError,
    ErrorCode,
    ModelCodes,
    ScaiBotCodes,
    ScaiGridCodes,
    ScaiWaveCodes,
    all_codes,
)


def test_every_code_is_named_for_itself_and_has_an_error_status() -> None:
    codes = all_codes()
    for name, code in codes.items():
        assert code.name == name
        assert str(code) == name
        assert 400 <= code.status < 600
        assert getattr(ErrorCode, name) is code


def test_families_do_not_overlap() -> None:
    fams = [ScaiWaveCodes, ScaiGridCodes, ModelCodes, ScaiBotCodes]
    names = [{k for k in vars(f) if k.isupper()} for f in fams]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not a & b
    assert all(c.family == "model" for k, c in vars(ModelCodes).items() if k.isupper())


@pytest.mark.parametrize(
    ("code", "family", "twin"),
    [
        (ErrorCode.SW_NOT_MEMBER, "sg", ErrorCode.ROOM_NOT_FOUND),
        (ErrorCode.SW_INVALID_PARAM, "bot", ErrorCode.VALIDATION_ERROR),
        (ErrorCode.VALIDATION_ERROR, "sw", ErrorCode.SW_INVALID_PARAM),
        (ErrorCode.SW_CONTENT_TOO_LARGE, "sg", ErrorCode.SW_CONTENT_TOO_LARGE),
        (ErrorCode.MODEL_NOT_FOUND, "sw", ErrorCode.MODEL_NOT_FOUND),
        (ErrorCode.MODEL_NOT_FOUND, "sg", ErrorCode.MODEL_NOT_FOUND),
        (ErrorCode.BOT_NOT_FOUND, "sw", ErrorCode.BOT_NOT_FOUND),
    ],
)
def test_for_family(code: object, family: str, twin: object) -> None:
    err = ApiError(code, "m", retry_after=3)  # type: ignore[arg-type]
    out = err.for_family(family)  # type: ignore[arg-type]
    assert out.code is twin
    assert out.retry_after == 3
    assert out.message == "m"
