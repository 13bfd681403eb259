"""Where extraction runs: PDF and DOCX in a child process, text and HTML in threads.

pypdf and python-docx are pure Python: in a thread they hold the GIL for long
stretches and the event loop waits for it (measured on a 1 MB, 1,500-page PDF:
loop lag p99 60 ms, max 136 ms; bench/RESULTS.md). A child process
(``python -m homeserver.modules.scaibot.knowledge.extract FILE TYPE``, text on
stdout) leaves the loop untouched, and an extraction that overruns its
timeout is stopped by killing it. At most ``processes`` run at once; with
``processes = 0`` everything runs in threads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from homeserver.modules.scaibot.knowledge.extract import (
    EXIT_EXTRACTION_ERROR,
    ExtractionError,
    extract_text,
)

IN_PROCESS = ("pdf", "docx")
MODULE = "homeserver.modules.scaibot.knowledge.extract"


class Extractor:
    def __init__(self, *, processes: int, timeout_s: float) -> None:
        self._processes = processes
        self._timeout = timeout_s
        self._limiter = trio.CapacityLimiter(max(1, processes))

    async def extract(self, path: Path, doc_type: str) -> str:
        """The document's text, or ExtractionError (also for a timeout or a crash)."""
        try:
            with trio.fail_after(self._timeout):
                async with self._limiter:
                    if self._processes > 0 and doc_type in IN_PROCESS:
                        return await self._in_process(path, doc_type)
                    return await trio.to_thread.run_sync(
                        extract_text, path, doc_type, abandon_on_cancel=True
                    )
        except trio.TooSlowError:
            raise ExtractionError(f"extraction took over {self._timeout:g} s") from None

    async def _in_process(self, path: Path, doc_type: str) -> str:
        done = await trio.run_process(
            [sys.executable, "-m", MODULE, str(path), doc_type],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        if done.returncode == 0:
            return bytes(done.stdout).decode("utf-8")
        if done.returncode == EXIT_EXTRACTION_ERROR:
            reason = bytes(done.stderr).decode("utf-8", "replace").strip()
            raise ExtractionError(reason[:500] or "extraction failed")
        raise ExtractionError("extraction crashed (the file may be malformed)")
