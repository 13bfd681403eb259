"""A ``homeserver serve --dev --port 0`` subprocess for tests that need a real process.

The server's stdout line ``homeserver listening on URL`` gives the address (and
``homeserver metrics on URL`` the metrics port, when it has one); stderr (the
log) goes to a file the test can read. ``stop()`` kills it. Used by the
end-to-end tests, the JSON-log test and the schemathesis run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"^homeserver listening on (http://[\d.]+:\d+)\s*$")
SERVE = (sys.executable, "-m", "homeserver.cli", "serve", "--dev", "--port", "0")
METRICS = re.compile(r"^homeserver metrics on (http://[\d.]+:\d+/metrics)\s*$")
START_TIMEOUT = 30.0


def clean_env(
    extra: dict[str, str] | None = None, *, synchronous: str = "normal"
) -> dict[str, str]:
    """The caller's environment without any HOMESERVER_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMESERVER_")}
    env["HOMESERVER_DB_SYNCHRONOUS"] = synchronous
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class ServerProcess:
    """One ``homeserver serve`` subprocess; stdout is drained by a thread."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        *,
        synchronous: str = "normal",
    ) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.lines: list[str] = []
        self.base_url = ""
        self.metrics_url = ""
        self._ready = threading.Event()
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [*SERVE, "--data-dir", str(data_dir)],
            cwd=REPO,
            env=clean_env(env, synchronous=synchronous),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            metrics = METRICS.match(line)
            if metrics:
                self.metrics_url = metrics.group(1)
            match = LISTENING.match(line)
            if match and not self.base_url:
                self.base_url = match.group(1)  # printed after the metrics line
                self._ready.set()
        self._ready.set()  # EOF: the process is gone; wake the waiter

    def wait_ready(self, timeout: float = START_TIMEOUT) -> str:
        self._ready.wait(timeout)
        if not self.base_url:
            self.stop()
            raise AssertionError(
                f"server did not report 'homeserver listening on' within {timeout} s "
                f"(exit code {self.proc.returncode}); stdout={''.join(self.lines)!r}; "
                f"log={self.log_text()[-4000:]!r}"
            )
        return self.base_url

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text("utf-8", errors="replace")

    def signal(self, signum: int, timeout: float) -> int:
        """Send ``signum`` and wait for the exit code (TimeoutExpired if it hangs)."""
        self.proc.send_signal(signum)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        finally:
            self._reader.join(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._log.close()
