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


DEPTH_NOTEBOOK = NOTEBOOK.parent / "depth_bundled.ipynb"


def test_depth_notebook_runs(tmp_path, monkeypatch, capsys):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    namespace: dict = {}
    for cell in json.loads(DEPTH_NOTEBOOK.read_text())["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), DEPTH_NOTEBOOK.name, "exec"), namespace)
    out = capsys.readouterr().out
    assert "Similarity Depth of bundled shapes-world CLIP: 8 classes" in out
    assert "ring.n.02" in out or "shape.n.02" in out or "plane_figure.n.01" in out
    result = namespace["result"]
    aff = result.methods["affinity"]
    assert len(aff.depths) == 8 - aff.n_clusters and aff.sd == sum(aff.depths) / len(aff.depths)
    assert (tmp_path / "weightscope-out" / "depth-notebook" / "report.html").stat().st_size > 10_000
