"""The many-checkpoint harness: a 2-worker Dask cluster, a manifest, a failing checkpoint, a resumed run that skips
finished checkpoints, results equal to the in-process comparison, the summary table (CSV and Parquet)."""
import copy
import csv
import sys

import pytest
from safetensors.torch import save_file

from weightscope import describe_model
from weightscope.models.adapters import write_attention
from weightscope.analyses.compare import compare_models, load_comparisons
from weightscope.core.errors import WeightscopeError
from weightscope.analyses.harness import read_manifest, run_harness
from weightscope.bundled import spec_loading

LOADING = spec_loading()


def _save(model, path):
    save_file({k: v.detach().float().contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Bundled base; 'scaled': head (2, 1) written 1.5x stronger; 'tuned': the shipped tuned model; 'broken'."""
    from weightscope.shapes import bundled

    folder = tmp_path_factory.mktemp("ckpts")
    base, _ = bundled.load("base")
    scaled = copy.deepcopy(base)
    attn = copy.deepcopy(describe_model(base).layers[2].attn)
    attn.write_o[1] = 1.5 * attn.write_o[1]
    write_attention(scaled, 2, attn)
    (folder / "broken.safetensors").write_bytes(b"not a checkpoint")
    paths = {"scaled": _save(scaled, folder / "scaled.safetensors"),
             "tuned": str(bundled.checkpoint_path("tuned")), "broken": str(folder / "broken.safetensors")}
    manifest = folder / "runs.csv"
    manifest.write_text("label,checkpoint\n" + "\n".join(f"{k},{v}" for k, v in paths.items()) + "\n")
    return paths, manifest


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("dask.distributed", reason="needs the distributed extra (in .[dev] too)")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as c:
        yield c


def test_cluster_run_fails_one_resumes_and_matches_in_process(checkpoints, cluster, tmp_path, capsys):
    from weightscope.cli import main

    paths, manifest = checkpoints
    out = tmp_path / "out"
    code = main(["compare", "bundled", "--manifest", str(manifest), "--scheduler", cluster.scheduler_address,
                 "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2                                               # one of three failed; the others finished
    assert "weightscope compare: error: broken: " in captured.err
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["label"], r["status"]) for r in rows] == [("scaled", "done"), ("tuned", "done"), ("broken", "failed")]
    assert rows[2]["error"] and not rows[0]["error"]
    results = sorted((out / "results").glob("*.json"))
    assert len(results) == 2
    stamps = {p: p.stat().st_mtime_ns for p in results}

    # the distributed result is the in-process comparison of the same pair
    found = {c.tuned: c for c in load_comparisons(out / "compare.json")}
    direct = compare_models("bundled", paths["scaled"], progress=False, loading=LOADING)
    got = found["scaled"]
    assert [(h.layer, h.head) for h in got.changed_heads()] == [(2, 1)] == \
        [(h.layer, h.head) for h in direct.changed_heads()]
    assert got.counts() == direct.counts() and got.counts()["reweighted"] == 32
    assert all(d.ratio == pytest.approx(1.5, rel=1e-5) for d in got[2, 1].directions)
    assert got.energy_total == pytest.approx(direct.energy_total, rel=1e-12)

    import pyarrow.parquet as pq

    table = pq.read_table(out / "summary.parquet").to_pylist()
    assert [r["label"] for r in table] == ["scaled", "tuned", "broken"]
    assert table[0]["reweighted"] == 32 and table[1]["rel_change"] == pytest.approx(float(rows[1]["rel_change"]))

    # resumed: finished checkpoints are read back, not recomputed; the broken one is tried (and fails) again
    again = run_harness("bundled", read_manifest(manifest), out, scheduler=cluster.scheduler_address, progress=False,
                        report=None, loading=LOADING)
    assert [r["status"] for r in again.rows] == ["skipped", "skipped", "failed"]
    assert {p: p.stat().st_mtime_ns for p in results} == stamps
    assert [c.tuned for c in again.comparisons] == ["scaled", "tuned"]
    assert again.comparisons[0].counts() == got.counts()

    # other options are another result: a changed threshold recomputes
    third = run_harness("bundled", [("scaled", paths["scaled"])], out, in_process=True, progress=False,
                        ratio_tol=0.6, report=None, loading=LOADING)
    assert third.rows[0]["status"] == "done" and third.comparisons[0].counts()["reweighted"] == 0


def test_without_the_extra_the_same_run_is_in_process(checkpoints, tmp_path, monkeypatch):
    import weightscope.analyses.harness as harness

    paths, _ = checkpoints
    monkeypatch.setattr(harness, "have_distributed", lambda: False)
    monkeypatch.setitem(sys.modules, "pyarrow", None)             # import pyarrow -> ImportError
    res = run_harness("bundled", [("scaled", paths["scaled"]), ("broken", paths["broken"])], tmp_path,
                      progress=False, report=None, loading=LOADING)
    assert res.where == "in-process" and [r["status"] for r in res.rows] == ["done", "failed"]
    assert (tmp_path / "summary.csv").is_file() and not (tmp_path / "summary.parquet").exists()
    assert any("summary.parquet skipped" in n and ".[distributed]" in n for n in res.notes)
    assert any("dask.distributed not installed" in n for n in res.notes)


def test_manifest_formats_and_bad_arguments(tmp_path):
    plain = tmp_path / "list.txt"
    (tmp_path / "a.safetensors").write_bytes(b"x")
    plain.write_text("# runs\na.safetensors\n\nViT-B-32:openai\n")
    assert read_manifest(plain) == [("a.safetensors", str(tmp_path / "a.safetensors")),
                                    ("ViT-B-32:openai", "ViT-B-32:openai")]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,where\nx,y\n")
    with pytest.raises(WeightscopeError, match="'checkpoint' column"):
        read_manifest(bad)
    with pytest.raises(WeightscopeError, match="manifest file not found"):
        read_manifest(tmp_path / "missing.txt")
    with pytest.raises(WeightscopeError, match="labels must be unique"):
        run_harness("bundled", [("a", "x.pt"), ("a", "y.pt")], loading=LOADING)
    with pytest.raises(WeightscopeError, match="exclude each other"):
        run_harness("bundled", ["x.pt"], scheduler="tcp://nowhere:1", in_process=True, loading=LOADING)
    with pytest.raises(WeightscopeError, match="ratio_tol must be >= 0"):
        run_harness("bundled", ["x.pt"], ratio_tol=-1, loading=LOADING)


def test_missing_checkpoint_is_refused_before_anything_loads(tmp_path, capsys, monkeypatch):
    """A path that does not exist is bad input: one line, exit 2, and the base is never loaded or decomposed."""
    from weightscope.models import load
    from weightscope.cli import main

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the missing file was noticed")

    monkeypatch.setattr(load, "load_model", no_loading)
    missing = tmp_path / "missing.pt"
    assert main(["compare", "bundled", "bundled:tuned", str(missing), "--quiet", "--in-process"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"weightscope compare: error: checkpoint {missing} does not exist; check the path"]
