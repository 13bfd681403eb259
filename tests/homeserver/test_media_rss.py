"""A ~20 MB upload and download keep the server's memory flat (the bytes stream).

The server runs as a subprocess (its RSS is read from /proc/<pid>/status by a
sampling thread); the 200 MB figure is in bench/media_rss.py and bench/RESULTS.md.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc"),
]

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"^homeserver listening on (http://127\.0\.0\.1:\d+)\s*$")
SIZE = 20 * 1024 * 1024
MAX_GROWTH_KB = 15 * 1024
BOUNDARY = "rss-test-boundary"
SERVE = [sys.executable, "-m", "homeserver.cli", "serve", "--dev", "--port", "0"]


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise LookupError("VmRSS")


class _Peak:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.kb = _rss_kb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.kb = max(self.kb, _rss_kb(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.kb


def _body(size: int) -> tuple[int, Iterator[bytes]]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    block = hashlib.sha256(b"rss").digest() * (256 * 1024 // 32)

    def chunks() -> Iterator[bytes]:
        yield head
        for n in range(size // len(block)):
            yield n.to_bytes(8, "little") + block[8:]
        yield tail

    assert size % len(block) == 0
    return len(head) + size + len(tail), chunks()


def _expected_sha256(size: int, chunks: Iterator[bytes]) -> str:
    hasher = hashlib.sha256()
    for i, piece in enumerate(chunks):
        if 0 < i <= size // (256 * 1024):
            hasher.update(piece)
    return hasher.hexdigest()


def _upload(client: httpx.Client, token: str, size: int) -> dict[str, object]:
    length, chunks = _body(size)
    r = client.post(
        "/v1/media/upload",
        content=chunks,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(length),
        },
    )
    assert r.status_code == 201, r.text
    data: dict[str, object] = r.json()["data"]
    return data


def test_large_upload_and_download_keep_rss_flat(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMESERVER_")}
    env.update(PYTHONUNBUFFERED="1", HOMESERVER_DB_SYNCHRONOUS="normal")
    proc = subprocess.Popen(
        [*SERVE, "--data-dir", str(tmp_path / "data")],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = ""
        deadline = time.monotonic() + 30
        while not base_url and time.monotonic() < deadline:
            match = LISTENING.match(proc.stdout.readline())
            base_url = match.group(1) if match else ""
        assert base_url, "the server did not start"
        with httpx.Client(base_url=base_url, timeout=120) as client:
            r = client.post("/v1/auth/register", json={"username": "big", "password": "pw123456"})
            token = r.json()["data"]["access_token"]
            _upload(client, token, 1024 * 1024)  # warm up every code path
            time.sleep(0.3)
            baseline = _rss_kb(proc.pid)
            peak = _Peak(proc.pid)
            answer = _upload(client, token, SIZE)
            upload_growth = peak.stop() - baseline
            assert answer["size"] == SIZE
            _, chunks = _body(SIZE)
            assert answer["sha256"] == _expected_sha256(SIZE, chunks)
            hasher = hashlib.sha256()
            peak = _Peak(proc.pid)
            with client.stream(
                "GET",
                f"/v1/media/download/{answer['media_id']}",
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                assert resp.status_code == 200
                for piece in resp.iter_bytes():
                    hasher.update(piece)
            download_growth = peak.stop() - baseline
            assert hasher.hexdigest() == answer["sha256"]
        print(f"RSS growth: upload {upload_growth} kB, download {download_growth} kB")
        assert upload_growth < MAX_GROWTH_KB, f"upload grew RSS by {upload_growth} kB"
        assert download_growth < MAX_GROWTH_KB, f"download grew RSS by {download_growth} kB"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
