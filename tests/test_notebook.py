"""The inspection notebook runs offline on the bundled model: its code cells are executed in order."""
import json
from pathlib import Path

import matplotlib

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "inspect_bundled.ipynb"


def test_notebook_runs(tmp_path, monkeypatch, capsys):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    namespace: dict = {}
    for cell in cells:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{NOTEBOOK.name}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "top concept from the shapes world" in out
    assert (tmp_path / "weightscope-out" / "notebook-report.html").stat().st_size > 10_000
    assert namespace["hits"] / namespace["total"] > 0.25


SIMILARITY_NOTEBOOK = NOTEBOOK.parent / "similarity_bundled.ipynb"


def test_similarity_notebook_runs(tmp_path, monkeypatch, capsys):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    namespace: dict = {}
    for cell in json.loads(SIMILARITY_NOTEBOOK.read_text())["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), SIMILARITY_NOTEBOOK.name, "exec"), namespace)
    out = capsys.readouterr().out
    assert "best held-out IoU" in out and "Spearman" in out
    assert list(namespace["cross"].argmax(axis=1)) == list(range(len(namespace["cross"])))
    assert (tmp_path / "weightscope-out" / "similarity" / "report.html").stat().st_size > 10_000
