"""``?since=`` takes ASCII digits only (``"¹".isdigit()`` is true, ``int("¹")`` fails)."""

from __future__ import annotations

from websockets.datastructures import Headers
from websockets.http11 import Request

from homeserver.stream.connection import _token_from


def test_since_must_be_ascii_digits() -> None:
    token, since, error = _token_from(Request("/v1/stream?token=t&since=%C2%B95", Headers()))
    assert (token, since) == ("t", None)
    assert error is not None
    assert error.startswith("since:")
    assert _token_from(Request("/v1/stream?since=15", Headers()))[1:] == (15, None)
