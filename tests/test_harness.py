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
from weightscope.analyses.harness import merge_harness, read_manifest, run_harness
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


# --------------------------------------------------------------------------------- issue 26, kind 5; issue 32


def _rows_without_timing(path):
    return [{k: v for k, v in r.items() if k not in ("seconds", "status", "note")}
            for r in csv.DictReader(path.open())]


def test_damaged_saved_result_is_recomputed_not_trusted(checkpoints, tmp_path, capsys):
    """Issue 26 kind 5: a saved result that does not parse or verify is recomputed, the run names the file it
    replaced, and nothing partial is read as done. Members: a truncated file (the given input), an empty one, a
    valid JSON result of another checkpoint copied over it, one number changed inside a valid file, a result
    of the old unverified format."""
    import json
    import shutil

    from weightscope.cli import main
    from weightscope.analyses.harness import read_result

    paths, _ = checkpoints
    out = tmp_path / "out"
    argv = ["compare", "bundled", paths["scaled"], paths["tuned"], "--out", str(out), "--quiet", "--in-process"]
    assert main(argv) == 0
    capsys.readouterr()
    good = _rows_without_timing(out / "summary.csv")
    keys = {r["label"]: r["key"] for r in good}
    target = out / "results" / f"{keys[paths['scaled']]}.json"
    other = out / "results" / f"{keys[paths['tuned']]}.json"
    original = target.read_bytes()
    expected = read_result(out, keys[paths["scaled"]])[0].to_dict()

    def old_format(p):
        p.write_text(json.dumps(json.loads(original)["body"]["comparison"]))

    def one_number_changed(p):
        env = json.loads(original)
        env["body"]["comparison"]["totals"]["rel_change"] *= 2
        p.write_text(json.dumps(env))

    damages = {"truncated": lambda p: p.write_bytes(original[: len(original) // 2]),
               "empty": lambda p: p.write_bytes(b""),
               "another checkpoint's result": lambda p: shutil.copyfile(other, p),
               "one number changed": one_number_changed, "old unverified format": old_format}
    for name, damage in damages.items():
        damage(target)
        assert main(argv) == 0, name
        printed = capsys.readouterr().out
        assert f"note: {paths['scaled']}: recomputed: {target}" in printed, name
        assert "1 damaged result(s) recomputed" in printed, name
        assert _rows_without_timing(out / "summary.csv") == good, name          # the good summary stands
        assert read_result(out, keys[paths["scaled"]])[0].to_dict() == expected, name
    # untouched, both are reused
    assert main(argv) == 0 and "2 reused" in capsys.readouterr().out


@pytest.fixture(scope="module")
def in_process_reference(checkpoints, tmp_path_factory):
    paths, manifest = checkpoints
    out = tmp_path_factory.mktemp("reference")
    from weightscope.reports.compare import write_report

    res = run_harness("bundled", read_manifest(manifest), out, in_process=True, progress=False, report=write_report,
                      loading=LOADING)
    return out, res


def test_shards_in_separate_processes_merge_to_the_in_process_run(checkpoints, in_process_reference, tmp_path,
                                                                   capsys):
    """Issue 32: `--shard I/N` in separate processes, then `--merge`, gives the in-process run's results; a missing
    or damaged shard is listed (exit 2), never skipped silently."""
    import json
    import os
    import subprocess

    from weightscope.cli import main

    paths, manifest = checkpoints
    ref_out, ref = in_process_reference
    out = tmp_path / "sharded"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(__import__("pathlib").Path(__file__).parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    for i in (1, 2):
        done = subprocess.run([sys.executable, "-m", "weightscope.cli", "compare", "bundled", "--manifest",
                               str(manifest), "--out", str(out), "--shard", f"{i}/2", "--quiet"],
                              capture_output=True, text=True, env=env)
        assert done.returncode == (2 if i == 1 else 0), done.stderr          # shard 1 holds the broken file
        assert f"merge with: weightscope compare --merge {out}" in done.stdout
    assert not (out / "summary.csv").exists()
    assert main(["compare", "--merge", str(out), "--quiet"]) == 2           # the broken checkpoint failed
    assert "broken: " in capsys.readouterr().err
    assert _rows_without_timing(out / "summary.csv") == _rows_without_timing(ref_out / "summary.csv")
    merged = json.loads((out / "compare.json").read_text())
    assert merged == json.loads((ref_out / "compare.json").read_text())
    assert [c["tuned"] for c in merged["comparisons"]] == ["scaled", "tuned"]

    # a missing shard: its checkpoints are listed as missing, the others merged
    (out / "shards" / "2-of-2.json").unlink()
    assert main(["compare", "--merge", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "tuned: missing (shard 2/2 saved no result: rerun it)" in err
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["label"], r["status"]) for r in rows] == [("scaled", "done"), ("tuned", "missing"), ("broken", "failed")]
    # a damaged shard record is not read: its checkpoints are missing too
    (out / "shards" / "1-of-2.json").write_text("{")
    res = merge_harness(out, progress=False, loading=LOADING)
    assert [r["status"] for r in res.rows] == ["missing"] * 3 and not res.comparisons
    assert any("shard 1/2 ignored" in n for n in res.notes)
    # a shard of another run in the same folder is refused
    with pytest.raises(WeightscopeError, match="holds shards of another run"):
        run_harness("bundled", [("scaled", paths["scaled"])], out, in_process="1/2", progress=False, loading=LOADING)
    with pytest.raises(WeightscopeError, match="1 <= I <= N"):
        run_harness("bundled", [("scaled", paths["scaled"])], tmp_path / "x", in_process="3/2", progress=False,
                    loading=LOADING)


def test_dask_jobqueue_path_on_its_local_test_cluster(checkpoints, in_process_reference, tmp_path):
    """Issue 32: --cluster runs through dask-jobqueue; its LocalCluster (jobs as local processes) stands in for
    SLURM / PBS / SGE. Results equal the in-process run's."""
    pytest.importorskip("dask_jobqueue", reason="needs the jobqueue extra (in .[dev] too)")
    import json

    paths, _ = checkpoints
    _, ref = in_process_reference
    res = run_harness("bundled", [("scaled", paths["scaled"]), ("tuned", paths["tuned"])], tmp_path,
                      scheduler=("local", {"cores": 1, "memory": "2GB", "jobs": 1}), progress=False, loading=LOADING)
    assert res.where == "local cluster (1 job)" and [r["status"] for r in res.rows] == ["done", "done"]
    assert [c.to_dict() for c in res.comparisons] == [c.to_dict() for c in ref.comparisons]
    from weightscope.analyses.zoo.jobqueue import check_cluster

    with pytest.raises(WeightscopeError, match="needs cores and memory"):
        check_cluster("slurm", {})
