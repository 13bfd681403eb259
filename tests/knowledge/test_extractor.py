"""The extractor: PDF/DOCX in a child process (reasons, crash, timeout), text in threads."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeserver.modules.scaibot.knowledge import extractor as extractor_module
from homeserver.modules.scaibot.knowledge.extract import ExtractionError
from homeserver.modules.scaibot.knowledge.extractor import Extractor
from tests.knowledge.support import docx_bytes, encrypted_pdf_bytes, pdf_bytes


@pytest.mark.parametrize("processes", [0, 1])
async def test_pdf_docx_and_failures(tmp_path: Path, processes: int) -> None:
    extractor = Extractor(processes=processes, timeout_s=60)
    pdf = tmp_path / "a"
    pdf.write_bytes(pdf_bytes("Caf\u00e9 menus are printed daily."))
    assert await extractor.extract(pdf, "pdf") == "Caf\u00e9 menus are printed daily."
    doc = tmp_path / "b"
    doc.write_bytes(docx_bytes("First.", "Second."))
    assert await extractor.extract(doc, "docx") == "First.\n\nSecond."
    enc = tmp_path / "c"
    enc.write_bytes(encrypted_pdf_bytes("hidden"))
    with pytest.raises(ExtractionError, match="encrypted"):
        await extractor.extract(enc, "pdf")
    txt = tmp_path / "d"
    txt.write_bytes(b"plain\n\n\n\ntext   here")
    assert await extractor.extract(txt, "txt") == "plain\n\ntext here"


async def test_a_crashed_child_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ExtractionError, match="cannot be read"):
        await Extractor(processes=1, timeout_s=60).extract(tmp_path / "missing", "pdf")
    monkeypatch.setattr(extractor_module, "MODULE", "homeserver.no_such_module")
    with pytest.raises(ExtractionError, match="crashed"):
        await Extractor(processes=1, timeout_s=60).extract(tmp_path / "missing", "pdf")


async def test_an_overrunning_child_is_stopped(tmp_path: Path) -> None:
    pdf = tmp_path / "a"
    pdf.write_bytes(pdf_bytes("slow"))
    with pytest.raises(ExtractionError, match="took over"):
        await Extractor(processes=1, timeout_s=0.001).extract(pdf, "pdf")
