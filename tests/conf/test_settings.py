"""Tests for conf.settings: defaults, file, env, precedence, validation messages."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conf import ConfigError, Settings, example_path, from_mapping, load
from conf.settings import _SPECS

FIELDS = [f.name for f in dataclasses.fields(Settings)]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "homeserver.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- defaults


def test_defaults() -> None:
    s = Settings()
    assert s.host == "127.0.0.1"
    assert s.port == 8000
    assert s.db_synchronous == "full"
    assert s.ws_ping_interval == 30.0
    assert dict(s.rate_limit_overrides) == {}
    assert s.effective_registration is False
    assert load(env={}) == s
    assert from_mapping({}) == s


def test_spec_table_covers_every_field() -> None:
    assert set(_SPECS) == set(FIELDS)


def test_settings_is_immutable_and_hashable() -> None:
    s = from_mapping({"rate_limit_overrides": {"bot": 0}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.rate_limit_overrides["bot"] = 5  # type: ignore[index]
    assert hash(s) == hash(from_mapping({"rate_limit_overrides": {"bot": 0}}))


def test_constructor_validates() -> None:
    with pytest.raises(ConfigError, match="port"):
        Settings(port=-1)


def test_effective_registration() -> None:
    assert Settings(dev=True).effective_registration is True
    assert Settings(registration_enabled=True).effective_registration is True


# --------------------------------------------------------------------------- example.toml


def test_example_equals_defaults() -> None:
    assert load(example_path(), env={}) == Settings()


def test_example_lists_every_field_with_a_comment() -> None:
    text = example_path().read_text(encoding="utf-8")
    assert set(tomllib.loads(text)) == set(FIELDS)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("# "), f"no comment above {line!r}"


def test_example_lists_every_field_of_every_table() -> None:
    tables = {
        name: value
        for name, value in tomllib.loads(example_path().read_text(encoding="utf-8")).items()
        if isinstance(value, dict) and dataclasses.is_dataclass(getattr(Settings(), name))
    }
    assert {"sessions", "scaibot", "cluster"} <= set(tables)
    for name, table in tables.items():
        fields = {f.name for f in dataclasses.fields(getattr(Settings(), name))}
        assert set(table) == fields, name


# --------------------------------------------------------------------------- sources


def test_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'port = 9000\ndev = true\ndb_synchronous = "normal"\nws_ping_interval = 5\n'
        "rate_limit_overrides = { alice = 10, bot = 0 }\n",
    )
    s = load(path, env={})
    assert s.port == 9000
    assert s.dev is True
    assert s.effective_registration is True
    assert s.db_synchronous == "normal"
    assert s.ws_ping_interval == 5.0
    assert isinstance(s.ws_ping_interval, float)
    assert dict(s.rate_limit_overrides) == {"alice": 10, "bot": 0}
    assert load(str(path), env={}) == s


def test_whole_float_accepted_for_int() -> None:
    s = from_mapping({"port": 9000.0})
    assert s.port == 9000
    assert isinstance(s.port, int)


def test_env_override() -> None:
    env = {
        "HOMESERVER_PORT": "9001",
        "HOMESERVER_DEV": "yes",
        "HOMESERVER_LOG_LEVEL": "debug",
        "HOMESERVER_TYPING_TIMEOUT": "2.5",
        "HOMESERVER_RATE_LIMIT_OVERRIDES": '{"bot": 0}',
        "HOMESERVER_UNRELATED": "ignored",
        "PORT": "1",
    }
    s = load(env=env)
    assert (s.port, s.dev, s.log_level, s.typing_timeout) == (9001, True, "debug", 2.5)
    assert dict(s.rate_limit_overrides) == {"bot": 0}


def test_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 1000\nhost = "0.0.0.0"\nwriter_max_batch = 10\n')
    env = {"HOMESERVER_PORT": "2000", "HOMESERVER_HOST": "::1"}
    s = load(path, env=env, overrides={"port": 3000, "host": None})
    assert s.port == 3000  # overrides > env
    assert s.host == "::1"  # env > file (None override skipped)
    assert s.writer_max_batch == 10  # file > defaults
    assert s.sync_max_limit == 500  # defaults


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMESERVER_PORT", "8123")
    assert load().port == 8123


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("0", False),
        ("true", True),
        ("FALSE", False),
        ("Yes", True),
        ("no", False),
        (" on ", True),
        ("OFF", False),
    ],
)
def test_env_bool_parsing(raw: str, expected: bool) -> None:
    assert load(env={"HOMESERVER_WS_CLOSE_DUPLICATE": raw}).ws_close_duplicate is expected


@given(st.integers(min_value=0, max_value=65535))
def test_env_port_round_trips(port: int) -> None:
    assert load(env={"HOMESERVER_PORT": str(port)}).port == port


def test_rate_limit_for() -> None:
    s = from_mapping({"rate_limit_messages": 20, "rate_limit_overrides": {"bot": 0, "vip": 500}})
    assert s.rate_limit_for("someone") == 20
    assert s.rate_limit_for("bot") == 0
    assert s.rate_limit_for("vip") == 500


# --------------------------------------------------------------------------- errors


def message(data: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as info:
        from_mapping(data)
    return str(info.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"port": "abc"}, "port: must be an integer from 0 to 65535 (got 'abc')"),
        ({"port": 70000}, "port: must be an integer from 0 to 65535 (got 70000)"),
        ({"port": True}, "port: must be an integer from 0 to 65535 (got True)"),
        ({"port": 80.5}, "port: must be an integer from 0 to 65535 (got 80.5)"),
        ({"db_synchronous": "fast"}, "db_synchronous: must be one of full, normal (got 'fast')"),
        ({"log_level": "trace"}, "log_level: must be one of debug, info, warning, error"),
        ({"dev": "true"}, "dev: must be true or false (got 'true')"),
        ({"dev": 1}, "dev: must be true or false (got 1)"),
        ({"host": ""}, "host: must be a non-empty string (got '')"),
        ({"server_name": 5}, "server_name: must be a non-empty string (got 5)"),
        ({"ws_ping_interval": 0}, "ws_ping_interval: must be a number greater than 0 and at most"),
        ({"ws_ping_interval": "5"}, "ws_ping_interval: must be a number"),
        ({"ws_ping_interval": float("nan")}, "ws_ping_interval: must be a number"),
        ({"ws_queue_bytes": 1024}, "ws_queue_bytes: must be an integer from 65536 to"),
        ({"access_token_ttl": 59}, "access_token_ttl: must be an integer from 60 to 31536000"),
        ({"db_read_connections": 0}, "db_read_connections: must be an integer from 1 to 64"),
        ({"rate_limit_overrides": [1]}, "rate_limit_overrides: must be a table"),
        ({"rate_limit_overrides": {"bot": -1}}, "rate_limit_overrides['bot']: must be an integer"),
        ({"rate_limit_overrides": {"": 1}}, "rate_limit_overrides: must be keyed by non-empty"),
        ({"sync_default_limit": 600}, "sync_default_limit: must be at most sync_max_limit (500)"),
        (
            {"history_default_limit": 300},
            "history_default_limit: must be at most history_max_limit (200)",
        ),
    ],
)
def test_error_messages(data: dict[str, object], expected: str) -> None:
    assert message(data).startswith(expected)


def test_unknown_key_suggestion() -> None:
    assert message({"prot": 1}) == "unknown setting 'prot' (did you mean 'port'?)"
    assert message({"zzzz": 1}) == "unknown setting 'zzzz'"


def test_unknown_override_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'hots' \(did you mean 'host'\?\)"):
        load(env={}, overrides={"hots": "x"})


@pytest.mark.parametrize(
    ("var", "raw", "expected"),
    [
        ("HOMESERVER_PORT", "x", "HOMESERVER_PORT: must be an integer from 0 to 65535 (got 'x')"),
        ("HOMESERVER_PORT", "", "HOMESERVER_PORT: must be an integer from 0 to 65535 (got '')"),
        ("HOMESERVER_PORT", "99999", "HOMESERVER_PORT: must be an integer from 0 to 65535"),
        ("HOMESERVER_DEV", "maybe", "HOMESERVER_DEV: must be one of 1, 0, true, false, yes, no"),
        ("HOMESERVER_DB_SYNCHRONOUS", "off", "HOMESERVER_DB_SYNCHRONOUS: must be one of full"),
        ("HOMESERVER_TYPING_TIMEOUT", "-1", "HOMESERVER_TYPING_TIMEOUT: must be a number"),
        ("HOMESERVER_RATE_LIMIT_OVERRIDES", "{", "HOMESERVER_RATE_LIMIT_OVERRIDES: must be a JSON"),
        (
            "HOMESERVER_RATE_LIMIT_OVERRIDES",
            '{"a": "b"}',
            "HOMESERVER_RATE_LIMIT_OVERRIDES['a']: must be an integer",
        ),
    ],
)
def test_env_error_messages(var: str, raw: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(env={var: raw})
    assert str(info.value).startswith(expected)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read config file"):
        load(missing, env={})


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "port = = 1\n")
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    assert str(info.value).startswith(f"{path}: invalid TOML: ")
    assert "line 1" in str(info.value)


def test_file_error_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'db_synchronous = "fast"\n')
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    assert str(info.value) == f"{path}: db_synchronous: must be one of full, normal (got 'fast')"


def test_file_nested_table_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'server'"):
        load(path, env={})
