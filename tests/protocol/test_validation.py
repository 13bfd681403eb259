"""protocol.validation: every helper's accept and refuse paths, codes and statuses."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.canonical import compact_size
from protocol.errors import ApiError, Code, ErrorCode, Family
from protocol.validation import (
    MAX_CONTENT_DEPTH,
    MAX_MENTIONS,
    MAX_POSITION,
    clamp_limit,
    normalise_mentions,
    opt_bool,
    opt_int,
    opt_list,
    opt_obj,
    opt_str,
    parse_direction,
    parse_json_body,
    parse_position,
    req_int,
    req_obj,
    req_str,
    text_content,
    validate_content,
)

INVALID = {"sw": (ErrorCode.SW_INVALID_PARAM, 400), "sg": (ErrorCode.VALIDATION_ERROR, 422)}
FAMILIES: list[Family] = ["sw", "sg"]


def expect_invalid(exc: pytest.ExceptionInfo[ApiError], family: Family, field: str) -> None:
    code, status = INVALID[family]
    assert exc.value.code is code
    assert exc.value.http_status == status
    assert exc.value.message.startswith(f"{field}: ")
    assert exc.value.details == [{"field": field, "message": exc.value.message[len(field) + 2 :]}]


# --------------------------------------------------------------------------- body


def test_parse_json_body_accepts_object() -> None:
    assert parse_json_body(b'{"a": 1, "b": [true]}', max_bytes=100) == {"a": 1, "b": [True]}


@pytest.mark.parametrize("raw", [b"", b"   \n"])
def test_parse_json_body_empty_is_empty_object(raw: bytes) -> None:
    assert parse_json_body(raw, max_bytes=10) == {}


@pytest.mark.parametrize(
    ("family", "code", "status"),
    [("sw", ErrorCode.SW_CONTENT_TOO_LARGE, 413), ("sg", ErrorCode.VALIDATION_ERROR, 422)],
)
def test_parse_json_body_too_large(family: Family, code: Code, status: int) -> None:
    raw = orjson.dumps({"a": "x" * 100})
    assert parse_json_body(raw, max_bytes=len(raw)) == {"a": "x" * 100}
    with pytest.raises(ApiError) as exc:
        parse_json_body(raw, max_bytes=len(raw) - 1, family=family)
    assert exc.value.code is code
    assert exc.value.http_status == status


@pytest.mark.parametrize(
    ("family", "code", "status"),
    [("sw", ErrorCode.SW_BAD_JSON, 400), ("sg", ErrorCode.VALIDATION_ERROR, 422)],
)
@pytest.mark.parametrize("raw", [b"{", b"{'a': 1}", b"nope", b"\xff\xfe", b'{"a": NaN}'])
def test_parse_json_body_not_json(raw: bytes, family: Family, code: Code, status: int) -> None:
    with pytest.raises(ApiError) as exc:
        parse_json_body(raw, max_bytes=1000, family=family)
    assert exc.value.code is code
    assert exc.value.http_status == status


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("raw", [b"[]", b"1", b'"s"', b"null", b"true"])
def test_parse_json_body_not_object(raw: bytes, family: Family) -> None:
    with pytest.raises(ApiError) as exc:
        parse_json_body(raw, max_bytes=1000, family=family)
    assert exc.value.message == "body must be a JSON object"
    expected = ErrorCode.SW_BAD_JSON if family == "sw" else ErrorCode.VALIDATION_ERROR
    assert exc.value.code is expected


# --------------------------------------------------------------------------- fields


def test_req_str() -> None:
    assert req_str({"name": "hi"}, "name") == "hi"
    assert req_str({"name": "abc"}, "name", max_len=3) == "abc"
    assert req_str({"name": ""}, "name", min_len=0) == ""


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "body", [{}, {"name": None}, {"name": ""}, {"name": 1}, {"name": ["a"]}, {"name": "abcd"}]
)
def test_req_str_refuses(body: dict[str, Any], family: Family) -> None:
    with pytest.raises(ApiError) as exc:
        req_str(body, "name", max_len=3, family=family)
    expect_invalid(exc, family, "name")


def test_req_str_min_len() -> None:
    with pytest.raises(ApiError) as exc:
        req_str({"pw": "abc"}, "pw", min_len=8)
    expect_invalid(exc, "sw", "pw")
    assert "at least 8" in exc.value.message


def test_opt_str() -> None:
    assert opt_str({}, "topic") is None
    assert opt_str({"topic": None}, "topic") is None
    assert opt_str({"topic": ""}, "topic") == ""
    assert opt_str({"topic": "t"}, "topic", max_len=1) == "t"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("value", [1, True, {}, [], "toolong"])
def test_opt_str_refuses(value: object, family: Family) -> None:
    with pytest.raises(ApiError) as exc:
        opt_str({"topic": value}, "topic", max_len=3, family=family)
    expect_invalid(exc, family, "topic")


def test_opt_bool() -> None:
    assert opt_bool({}, "is_public") is None
    assert opt_bool({}, "is_public", default=False) is False
    assert opt_bool({"is_public": None}, "is_public", default=True) is True
    assert opt_bool({"is_public": True}, "is_public") is True
    assert opt_bool({"is_public": False}, "is_public", default=True) is False


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("value", [0, 1, "true", [], {}])
def test_opt_bool_refuses(value: object, family: Family) -> None:
    with pytest.raises(ApiError) as exc:
        opt_bool({"is_public": value}, "is_public", family=family)
    expect_invalid(exc, family, "is_public")


def test_req_and_opt_int() -> None:
    assert req_int({"n": 0}, "n", lo=0, hi=100) == 0
    assert req_int({"n": 100}, "n", lo=0, hi=100) == 100
    assert opt_int({}, "n", lo=0, hi=1) is None
    assert opt_int({"n": None}, "n", lo=0, hi=1) is None
    assert opt_int({"n": -5}, "n", lo=-10, hi=1) == -5


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("value", [True, False, 1.0, 1.5, "1", [], {}, -1, 101])
def test_int_refuses(value: object, family: Family) -> None:
    with pytest.raises(ApiError) as exc:
        req_int({"n": value}, "n", lo=0, hi=100, family=family)
    expect_invalid(exc, family, "n")
    with pytest.raises(ApiError) as exc:
        opt_int({"n": value}, "n", lo=0, hi=100, family=family)
    expect_invalid(exc, family, "n")


@pytest.mark.parametrize("family", FAMILIES)
def test_req_int_missing(family: Family) -> None:
    with pytest.raises(ApiError) as exc:
        req_int({}, "power_level", lo=0, hi=100, family=family)
    expect_invalid(exc, family, "power_level")
    assert exc.value.message == "power_level: is required"


def test_opt_list() -> None:
    assert opt_list({}, "ids") is None
    assert opt_list({"ids": None}, "ids") is None
    assert opt_list({"ids": [1, "a", None]}, "ids") == [1, "a", None]
    assert opt_list({"ids": ["a", "b"]}, "ids", of=str, max_items=2) == ["a", "b"]
    assert opt_list({"ids": [{"a": 1}]}, "ids", of=dict) == [{"a": 1}]
    assert opt_list({"ids": [1, 2]}, "ids", of=int) == [1, 2]


@pytest.mark.parametrize("family", FAMILIES)
def test_opt_list_refuses(family: Family) -> None:
    with pytest.raises(ApiError) as exc:
        opt_list({"ids": "a"}, "ids", family=family)
    expect_invalid(exc, family, "ids")
    with pytest.raises(ApiError) as exc:
        opt_list({"ids": ["a", "b", "c"]}, "ids", max_items=2, family=family)
    expect_invalid(exc, family, "ids")
    with pytest.raises(ApiError) as exc:
        opt_list({"ids": ["a", 2]}, "ids", of=str, family=family)
    expect_invalid(exc, family, "ids[1]")
    with pytest.raises(ApiError) as exc:
        opt_list({"ids": [1, True]}, "ids", of=int, family=family)
    expect_invalid(exc, family, "ids[1]")


def test_req_and_opt_obj() -> None:
    assert req_obj({"c": {"a": 1}}, "c") == {"a": 1}
    assert opt_obj({}, "c") is None
    assert opt_obj({"c": None}, "c") is None
    assert opt_obj({"c": {}}, "c") == {}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("value", [None, 1, "x", [], True])
def test_obj_refuses(value: object, family: Family) -> None:
    with pytest.raises(ApiError) as exc:
        req_obj({"c": value}, "c", family=family)
    expect_invalid(exc, family, "c")
    if value is not None:
        with pytest.raises(ApiError) as exc:
            opt_obj({"c": value}, "c", family=family)
        expect_invalid(exc, family, "c")


# --------------------------------------------------------------------------- content


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _nested_list(depth: int) -> dict[str, Any]:
    value: Any = []
    for _ in range(depth - 2):
        value = [value]
    return {"a": value}


def test_validate_content_accepts() -> None:
    content = {"msgtype": "swp.text", "body": "hi", "x": [1, {"y": None}]}
    assert validate_content(content, max_bytes=65536) is content


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("value", [None, "text", 1, [], [{}], True])
def test_validate_content_not_object(value: object, family: Family) -> None:
    with pytest.raises(ApiError) as exc:
        validate_content(value, max_bytes=65536, family=family)
    expect_invalid(exc, family, "content")
    assert exc.value.message == "content: must be a JSON object"


@pytest.mark.parametrize("family", FAMILIES)
def test_validate_content_depth(family: Family) -> None:
    for build in (_nested, _nested_list):
        ok = build(MAX_CONTENT_DEPTH)
        assert validate_content(ok, max_bytes=65536, family=family) is ok
        with pytest.raises(ApiError) as exc:
            validate_content(build(MAX_CONTENT_DEPTH + 1), max_bytes=65536, family=family)
        expect_invalid(exc, family, "content")


def test_validate_content_very_deep_is_invalid_not_crash() -> None:
    with pytest.raises(ApiError) as exc:
        validate_content(_nested(5000), max_bytes=10**9)
    assert exc.value.code is ErrorCode.SW_INVALID_PARAM


def test_validate_content_non_json_value() -> None:
    with pytest.raises(ApiError) as exc:
        validate_content({"a": object()}, max_bytes=65536)
    expect_invalid(exc, "sw", "content")


@pytest.mark.parametrize("family", FAMILIES)
def test_validate_content_size_boundary(family: Family) -> None:
    max_bytes = 65536
    base = compact_size({"body": ""})
    exact = {"body": "x" * (max_bytes - base)}
    assert compact_size(exact) == max_bytes
    assert validate_content(exact, max_bytes=max_bytes, family=family) is exact
    over = {"body": "x" * (max_bytes - base + 1)}
    assert compact_size(over) == max_bytes + 1
    with pytest.raises(ApiError) as exc:
        validate_content(over, max_bytes=max_bytes, family=family)
    assert exc.value.code is ErrorCode.SW_CONTENT_TOO_LARGE
    assert exc.value.http_status == 413
    assert "x" * 10 not in exc.value.message


def test_validate_content_size_counts_utf8_bytes() -> None:
    content = {"b": "é" * 10}  # 2 bytes each
    size = compact_size(content)
    assert size == len('{"b":""}') + 20
    validate_content(content, max_bytes=size)
    with pytest.raises(ApiError):
        validate_content(content, max_bytes=size - 1)


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
)
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"]), max_size=10), children)
    ),
    max_leaves=30,
)
json_object = st.dictionaries(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=10), json_value, max_size=6
)


@given(json_object)
def test_validate_content_property_exact_limit(content: dict[str, Any]) -> None:
    size = compact_size(content)
    assert validate_content(content, max_bytes=size) is content
    with pytest.raises(ApiError) as exc:
        validate_content(content, max_bytes=size - 1)
    assert exc.value.code is ErrorCode.SW_CONTENT_TOO_LARGE
    assert exc.value.http_status == 413


@given(json_object, st.sampled_from(FAMILIES))
@settings(max_examples=200)
def test_validate_content_property_fixed_limit(content: dict[str, Any], family: Family) -> None:
    limit = 256
    if compact_size(content) <= limit:
        assert validate_content(content, max_bytes=limit, family=family) is content
    else:
        with pytest.raises(ApiError) as exc:
            validate_content(content, max_bytes=limit, family=family)
        assert exc.value.http_status == 413


def test_text_content() -> None:
    assert text_content("hello") == {"msgtype": "swp.text", "body": "hello"}


# --------------------------------------------------------------------------- query


def test_clamp_limit() -> None:
    assert clamp_limit(None, default=50, maximum=200) == 50
    assert clamp_limit("", default=50, maximum=200) == 50
    assert clamp_limit("1", default=50, maximum=200) == 1
    assert clamp_limit("200", default=50, maximum=200) == 200
    assert clamp_limit("201", default=50, maximum=200) == 200
    assert clamp_limit("007", default=50, maximum=200) == 7
    assert clamp_limit("9" * 400, default=50, maximum=200) == 200


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("raw", ["0", "-1", "abc", "1.5", "1e3", "+5", "1_0", "٣", "0x10"])
def test_clamp_limit_refuses(raw: str, family: Family) -> None:
    with pytest.raises(ApiError) as exc:
        clamp_limit(raw, default=50, maximum=200, family=family)
    expect_invalid(exc, family, "limit")


def test_clamp_limit_names_field() -> None:
    with pytest.raises(ApiError) as exc:
        clamp_limit("x", default=100, maximum=500, field="size")
    expect_invalid(exc, "sw", "size")


def test_parse_position() -> None:
    assert parse_position(None) is None
    assert parse_position("") is None
    assert parse_position("0") == 0
    assert parse_position("12345") == 12345
    assert parse_position(str(MAX_POSITION), "since") == MAX_POSITION


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("raw", ["-1", "x", "1.0", str(MAX_POSITION + 1), "9" * 100])
def test_parse_position_refuses(raw: str, family: Family) -> None:
    with pytest.raises(ApiError) as exc:
        parse_position(raw, "since", family=family)
    expect_invalid(exc, family, "since")


def test_parse_direction() -> None:
    assert parse_direction(None) == "back"
    assert parse_direction(None, default="forward") == "forward"
    assert parse_direction("back") == "back"
    assert parse_direction("b") == "back"
    assert parse_direction("forward") == "forward"
    assert parse_direction("F") == "forward"


@pytest.mark.parametrize("family", FAMILIES)
def test_parse_direction_refuses(family: Family) -> None:
    with pytest.raises(ApiError) as exc:
        parse_direction("sideways", family=family)
    expect_invalid(exc, family, "direction")


# --------------------------------------------------------------------------- mentions


def test_normalise_mentions_merges_in_order() -> None:
    content = {"body": "hi", "mentions": ["p-a", "ai-b", "p-a"]}
    out = normalise_mentions(
        content, [{"type": "user", "id": "p-c"}, {"type": "model", "id": "ai-b"}]
    )
    assert out == {"body": "hi", "mentions": ["p-a", "ai-b", "p-c"]}
    assert content["mentions"] == ["p-a", "ai-b", "p-a"]  # input untouched


def test_normalise_mentions_no_mentions() -> None:
    assert normalise_mentions({"body": "x"}, None) == {"body": "x"}
    assert normalise_mentions({"body": "x"}, []) == {"body": "x"}
    assert normalise_mentions({"mentions": []}, None) == {"mentions": []}
    assert normalise_mentions({}, [{"type": "agent", "id": "ai-1"}]) == {"mentions": ["ai-1"]}


def test_normalise_mentions_limit() -> None:
    ids = [f"p-{i}" for i in range(MAX_MENTIONS)]
    assert normalise_mentions({"mentions": ids}, None)["mentions"] == ids
    more = [{"type": "user", "id": pid} for pid in ids]  # all duplicates
    assert normalise_mentions({"mentions": ids}, more)["mentions"] == ids
    with pytest.raises(ApiError) as exc:
        normalise_mentions({"mentions": ids}, [{"type": "user", "id": "p-extra"}])
    expect_invalid(exc, "sw", "mentions")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("content", "mention", "field"),
    [
        ({"mentions": "p-a"}, None, "content.mentions"),
        ({"mentions": [1]}, None, "content.mentions[0]"),
        ({"mentions": ["p-a", "bad id!"]}, None, "content.mentions[1]"),
        ({}, {"type": "user", "id": "p-a"}, "mention"),
        ({}, ["p-a"], "mention[0]"),
        ({}, [{"id": "p-a"}], "mention[0].type"),
        ({}, [{"type": "", "id": "p-a"}], "mention[0].type"),
        ({}, [{"type": "user"}], "mention[0].id"),
        ({}, [{"type": "user", "id": 5}], "mention[0].id"),
    ],
)
def test_normalise_mentions_refuses(
    content: dict[str, Any], mention: object, field: str, family: Family
) -> None:
    with pytest.raises(ApiError) as exc:
        normalise_mentions(content, mention, family=family)
    expect_invalid(exc, family, field)
