"""The one integer parser for query parameters: ASCII digits only (issue 9, defect 4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ApiError
from protocol.validation import clamp_limit, parse_position, parse_timeout_ms, parse_uint


@given(st.text(max_size=30))
def test_any_text_parses_or_is_refused_with_an_api_error(raw: str) -> None:
    stripped = raw.strip()
    if not stripped or any(c not in "0123456789" for c in stripped):
        with pytest.raises(ApiError, match="n: must"):
            parse_uint(raw, "n")
        return
    value = parse_uint(raw, "n")
    assert value is None or value == int(stripped)


_UNICODE_DIGITS = [chr(c) for c in range(0x80, 0x30000) if chr(c).isdigit()]


@given(st.sampled_from(_UNICODE_DIGITS))
def test_non_ascii_digits_are_refused_everywhere(char: str) -> None:
    for raw in (char, "1" + char, char + "1"):
        with pytest.raises(ApiError):
            parse_uint(raw, "n")
        with pytest.raises(ApiError):
            clamp_limit(raw, default=10, maximum=100)
        with pytest.raises(ApiError):
            parse_position(raw, "since")
        with pytest.raises(ApiError):
            parse_timeout_ms(raw, default=5, maximum=100)


def test_timeout_default_and_clamp() -> None:
    assert parse_timeout_ms(None, default=5, maximum=100) == 5
    assert parse_timeout_ms("", default=5, maximum=100) == 5
    assert parse_timeout_ms("7", default=5, maximum=100) == 7
    assert parse_timeout_ms("7000", default=5, maximum=100) == 100
    assert parse_timeout_ms("9" * 40, default=5, maximum=100) == 100
