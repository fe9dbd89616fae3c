"""Notebooks: committed without outputs, and the evaluation notebook runs end to end (CPU)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.slow
def test_evaluate_model_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOSCREEN_WORK", str(tmp_path))
    path = ROOT / "notebooks" / "evaluate_model.ipynb"
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError on any error
    text = "\n".join(
        out.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    assert "IoU >= 0.4" in text and "centre distance <= 30 px" in text
    assert "another tool (CSV boxes), centre distance <= 30 px" in text
    for name in ("report_iou", "report_distance"):
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics["truth"] == 279 and metrics["predicted"] > 0
        assert metrics["tp"] + metrics["fn"] == 279
        assert (tmp_path / name / "map.html").is_file()
    assert (tmp_path / "model" / "model.yaml").is_file()
    # Section 6: the Sentinel-2 classifier at the east half's points, far above chance.
    line = next(x for x in text.splitlines() if "east half at" in x)
    ap, rate = (float(re.search(rf"{key} ([0-9.]+)", line).group(1))  # type: ignore[union-attr]
                for key in ("AP", "positive rate of"))  # fmt: skip
    assert ap > rate + 0.2
    # Section 7: similarity to eight west examples ranks the same points, no training.
    line = next(x for x in text.splitlines() if "west examples" in x)
    ap, rate = (float(re.search(rf"{key} ([0-9.]+)", line).group(1))  # type: ignore[union-attr]
                for key in ("AP", "positive rate of"))  # fmt: skip
    assert "deep + spectral" in line and ap > rate + 0.2
    # Section 7b: the search kept as a model screens at its own threshold, and is measured.
    line = next(x for x in text.splitlines() if x.startswith("kept model at the east half"))
    precision, recall = (float(re.search(rf"{key} ([0-9.]+)", line).group(1))  # type: ignore[union-attr]
                         for key in ("precision", "recall"))  # fmt: skip
    assert precision > rate + 0.2 and recall > 0.1
    assert any((tmp_path / "evidence").glob("*.png"))
