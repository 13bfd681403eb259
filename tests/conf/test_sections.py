"""[models] with [[models.backends]] and [ai]: TOML, environment, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from conf import ConfigError, Settings, load
from conf.sections import AiSettings, ModelsSettings

BACKEND = """
[models]
dev_echo = true

[[models.backends]]
name = "ollama"
base_url = "http://127.0.0.1:11434/v1/"
api_key_env = "OLLAMA_KEY"
timeout_s = 30
[[models.backends.models]]
slug = "llama3.1"
upstream_id = "llama3.1:8b"
context_window = 8192
max_output_tokens = 1024

[ai]
rate_limit = 5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    s = Settings()
    assert s.models == ModelsSettings()
    assert s.ai == AiSettings()
    assert s.effective_dev_echo is False
    assert Settings(dev=True).effective_dev_echo is True
    assert Settings(dev=True).effective_ai_open_creation is True
    assert s.tenant_id == "ten_default"


def test_backends_from_toml(tmp_path: Path) -> None:
    s = load(write(tmp_path, BACKEND), env={})
    assert s.models.dev_echo is True
    (b,) = s.models.backends
    assert b.name == "ollama"
    assert b.base_url == "http://127.0.0.1:11434/v1"
    assert b.timeout_s == 30.0
    (m,) = b.models
    assert (m.slug, m.upstream_id, m.display_name) == ("llama3.1", "llama3.1:8b", "llama3.1")
    assert (m.context_window, m.max_output_tokens) == (8192, 1024)
    assert b.resolved_api_key({"OLLAMA_KEY": "k"}) == "k"
    assert b.resolved_api_key({}) is None
    assert s.ai.rate_limit == 5
    assert s.ai.context_messages == 20


def test_env_overrides_merge_into_the_file_tables(tmp_path: Path) -> None:
    env = {"HOMESERVER_MODELS_DEV_ECHO": "false", "HOMESERVER_AI_CONTEXT_MESSAGES": "7"}
    s = load(write(tmp_path, BACKEND), env=env)
    assert s.models.dev_echo is False
    assert len(s.models.backends) == 1  # kept from the file
    assert (s.ai.rate_limit, s.ai.context_messages) == (5, 7)


def test_backends_from_env_json() -> None:
    env = {
        "HOMESERVER_MODELS_BACKENDS": '[{"name": "vllm", "base_url": "http://h:8000/v1",'
        ' "models": [{"slug": "qwen"}]}]'
    }
    (b,) = load(env=env).models.backends
    assert b.name == "vllm"
    assert b.models[0].context_window == 8192


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[models]\nbogus = 1\n", "models: unknown key 'bogus'"),
        ("[ai]\nrate_limit = -1\n", "ai.rate_limit"),
        ("[ai]\nmax_concurrent_generations = 0\n", "ai.max_concurrent_generations"),
        ('[[models.backends]]\nname = "x"\nbase_url = "http://h"\n', "models.backends[0].models"),
        (
            '[[models.backends]]\nname = "x"\nbase_url = "ftp://h"\nmodels = [{slug = "a"}]\n',
            "models.backends[0].base_url",
        ),
        (
            '[[models.backends]]\nname = "x"\nbase_url = "http://h"\nmodels = [{slug = "a",'
            " context_window = 1000, max_output_tokens = 1000}]\n",
            "models.backends[0].models[0].max_output_tokens",
        ),
        (
            '[[models.backends]]\nname = "x"\nbase_url = "http://h"\n'
            'models = [{slug = "dev/echo"}]\n',
            "built-in",
        ),
        (
            '[[models.backends]]\nname = "x"\nbase_url = "http://h"\nmodels = [{slug = "a"}]\n'
            '[[models.backends]]\nname = "y"\nbase_url = "http://h"\nmodels = [{slug = "a"}]\n',
            "slugs must be unique",
        ),
        ("models = 3\n", "models: must be a table"),
        ('[cluster]\ndatabase_url = "mysql://h"\nbus_url = "redis://h"\n', "cluster.database_url"),
        ('[cluster]\ndatabase_url = "postgresql://h/db"\n', "cluster.bus_url is required"),
        ('[cluster]\nnode_id = "a b"\n', "cluster.node_id"),
        ("[cluster]\nread_connections = 0\n", "cluster.read_connections"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(write(tmp_path, text), env={})
    assert names in str(exc.value)


def test_cluster_is_off_by_default_and_on_with_a_database_url(tmp_path: Path) -> None:
    assert load(env={}).cluster.enabled is False
    text = (
        '[cluster]\nnode_id = "n1"\ndatabase_url = "postgresql://hs@h/db"\nbus_url = "redis://h"\n'
        "[knowledge]\nenabled = false\n"
    )
    c = load(write(tmp_path, text), env={"HOMESERVER_CLUSTER_READ_CONNECTIONS": "3"}).cluster
    assert (c.enabled, c.node_id, c.read_connections, c.liveness_seconds) == (True, "n1", 3, 3.0)


def test_sessions_direct_sse_from_toml_and_env(tmp_path: Path) -> None:
    assert Settings().sessions.direct_sse is True
    path = write(tmp_path, "[sessions]\ndirect_sse = false\n")
    assert load(path, env={}).sessions.direct_sse is False
    assert load(None, env={"HOMESERVER_SESSIONS_DIRECT_SSE": "false"}).sessions.direct_sse is False
    with pytest.raises(ConfigError, match=r"sessions\.direct_sse"):
        load(write(tmp_path, '[sessions]\ndirect_sse = "no"\n'), env={})


def test_cluster_mode_accepts_knowledge(tmp_path: Path) -> None:
    """ScaiBot knowledge runs on PostgreSQL too (postings, storage.knowledge_pg): on by default."""
    text = '[cluster]\ndatabase_url = "postgresql://hs@h/db"\nbus_url = "redis://h"\n'
    settings = load(write(tmp_path, text), env={})
    assert (settings.cluster.enabled, settings.knowledge.enabled) == (True, True)
