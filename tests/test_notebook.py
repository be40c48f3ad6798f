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


SING_NOTEBOOK = NOTEBOOK.parent / "sing_bundled.ipynb"


def test_sing_notebook_runs(tmp_path, monkeypatch, capsys):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    namespace: dict = {}
    for cell in json.loads(SING_NOTEBOOK.read_text())["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), SING_NOTEBOOK.name, "exec"), namespace)
    out = capsys.readouterr().out
    assert "null space 56-d" in out and "largest logit change" in out
    assert namespace["families"]["shape"] > namespace["families"]["colour"] + 0.5
    assert (tmp_path / "weightscope-out" / "sing-notebook.html").stat().st_size > 10_000
