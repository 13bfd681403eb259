"""The [scaibot] settings table: defaults, TOML, environment, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from conf import settings as conf_settings
from conf.sections import ScaibotSettings


def test_defaults_and_toml(tmp_path: Path) -> None:
    assert conf_settings.load(env={}).scaibot == ScaibotSettings()
    path = tmp_path / "c.toml"
    path.write_text('[scaibot]\nsmtp_host = "127.0.0.1"\nsmtp_port = 2525\naction_attempts = 5\n')
    s = conf_settings.load(path, env={}).scaibot
    assert (s.smtp_host, s.smtp_port, s.action_attempts) == ("127.0.0.1", 2525, 5)
    assert s.visitor_messages_per_minute == 20


def test_environment() -> None:
    env = {
        "HOMESERVER_SCAIBOT_SMTP_HOST": "mail.internal",
        "HOMESERVER_SCAIBOT_BOT_MESSAGES_PER_MINUTE": "0",
    }
    s = conf_settings.load(env=env).scaibot
    assert (s.smtp_host, s.bot_messages_per_minute) == ("mail.internal", 0)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("smtp_port = 0", "scaibot.smtp_port"),
        ("action_attempts = 0", "scaibot.action_attempts"),
        ("webhook_timeout_s = -1", "scaibot.webhook_timeout_s"),
        ("colour = 1", "scaibot: unknown key"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[scaibot]\n{toml}\n")
    with pytest.raises(conf_settings.ConfigError, match=key):
        conf_settings.load(path, env={})
