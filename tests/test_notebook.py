"""Each analysis notebook runs offline on the bundled model: its code cells are executed in order."""
import json
from pathlib import Path

import matplotlib

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str, tmp_path, monkeypatch, capsys) -> tuple[dict, str]:
    """Execute the code cells of notebooks/NAME in a fresh namespace (cwd and cache under tmp_path)."""
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    namespace: dict = {}
    for cell in json.loads((NOTEBOOKS / name).read_text())["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), name, "exec"), namespace)
    return namespace, capsys.readouterr().out


def test_notebook_runs(tmp_path, monkeypatch, capsys):
    namespace, out = run_notebook("inspect_bundled.ipynb", tmp_path, monkeypatch, capsys)
    assert "top concept from the shapes world" in out
    assert (tmp_path / "weightscope-out" / "notebook-report.html").stat().st_size > 10_000
    assert namespace["hits"] / namespace["total"] > 0.25


def test_sing_notebook_runs(tmp_path, monkeypatch, capsys):
    namespace, out = run_notebook("sing_bundled.ipynb", tmp_path, monkeypatch, capsys)
    assert "null space 56-d" in out and "largest logit change" in out
    assert namespace["families"]["shape"] > namespace["families"]["colour"] + 0.5
    assert (tmp_path / "weightscope-out" / "sing-notebook.html").stat().st_size > 10_000


def test_depth_notebook_runs(tmp_path, monkeypatch, capsys):
    namespace, out = run_notebook("depth_bundled.ipynb", tmp_path, monkeypatch, capsys)
    assert "Similarity Depth of bundled shapes-world CLIP: 8 classes" in out
    assert "ring.n.02" in out or "shape.n.02" in out or "plane_figure.n.01" in out
    aff = namespace["result"].methods["affinity"]
    assert len(aff.depths) == 8 - aff.n_clusters and aff.sd == sum(aff.depths) / len(aff.depths)
    assert (tmp_path / "weightscope-out" / "depth-notebook" / "report.html").stat().st_size > 10_000


def test_similarity_notebook_runs(tmp_path, monkeypatch, capsys):
    namespace, out = run_notebook("similarity_bundled.ipynb", tmp_path, monkeypatch, capsys)
    assert "best held-out IoU" in out and "Spearman" in out
    assert list(namespace["cross"].argmax(axis=1)) == list(range(len(namespace["cross"])))
    assert (tmp_path / "weightscope-out" / "similarity" / "report.html").stat().st_size > 10_000


def test_sing_classifier_notebook_runs(tmp_path, monkeypatch, capsys):
    namespace, out = run_notebook("sing_classifier.ipynb", tmp_path, monkeypatch, capsys)
    assert "null space 56-d of 64" in out and "held-out mean cosine" in out and "class leakage" in out
    assert namespace["change"] <= 1e-6 and abs(namespace["st"].image_score - 40.0) < 1e-5
    assert set(namespace["families"]) == {"shape", "colour", "size", "position", "background"}
    assert (tmp_path / "weightscope-out" / "sing-classifier-notebook.html").stat().st_size > 10_000
