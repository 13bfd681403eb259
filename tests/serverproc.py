"""A ``homeserver serve --dev --port 0`` subprocess for tests that need a real process.

The server's stdout line ``homeserver listening on URL`` gives the address;
stderr (the log) goes to a file the test can read. ``stop()`` kills it.
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


class ServerProcess:
    def __init__(self, data_dir: Path, log_path: Path, env: dict[str, str]) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("HOMESERVER_")}
        clean |= {"PYTHONUNBUFFERED": "1", "HOMESERVER_DB_SYNCHRONOUS": "normal", **env}
        self.log_path = log_path
        self.base_url = ""
        self.metrics_url = ""
        self._ready = threading.Event()
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [*SERVE, "--data-dir", str(data_dir)],
            cwd=REPO,
            env=clean,
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
            metrics = METRICS.match(line)
            if metrics:
                self.metrics_url = metrics.group(1)
            match = LISTENING.match(line)
            if match and not self.base_url:
                self.base_url = match.group(1)  # printed after the metrics line
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 30.0) -> str:
        self._ready.wait(timeout)
        if not self.base_url:
            self.stop()
            raise AssertionError(f"server did not start; log: {self.log_text()[-3000:]}")
        return self.base_url

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text("utf-8", errors="replace")

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
