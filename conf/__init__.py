"""Homeserver settings (stdlib-only leaf package)."""

from conf.settings import ConfigError, Settings, example_path, from_mapping, load

__all__ = ["ConfigError", "Settings", "example_path", "from_mapping", "load"]
