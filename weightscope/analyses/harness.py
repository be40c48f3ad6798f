"""Compare one base checkpoint with many fine-tuned ones: one task per checkpoint, on Dask distributed or in-process.

    from weightscope.analyses.harness import run_harness
    result = run_harness("bundled", ["ft-a.safetensors", ("run b", "ft-b.safetensors")], "out/")
    print(result.table())

The base is loaded, described and decomposed once (``compare.prepare_base``) and shared with the workers
(``Client.scatter``, broadcast). Each task loads one tuned checkpoint, compares it with the base and writes its
result atomically to ``OUT/results/KEY.json``, where KEY hashes the checkpoint's content (the file's bytes; the
spec for named weights), the base's key and every option: a rerun finds the file and skips the checkpoint, so an
interrupted run resumes, and changed options or weights are recomputed. A checkpoint that fails (missing file,
wrong architecture, corrupt data) is reported with its one-line error and does not stop the others. At the end:
``summary.csv`` (and ``summary.parquet`` with pyarrow), ``compare.json`` and ``report.html`` in OUT.

Where it runs: ``scheduler`` (an address such as tcp://host:8786) uses an existing Dask cluster; otherwise, with
``dask.distributed`` installed and more than one checkpoint to compare, a ``LocalCluster`` of single-threaded
worker processes sized to the machine (CPU cores, and available memory over an estimate of one task's memory);
without it (or with ``in_process=True``) the same tasks run one after another here. Extra: ``pip install -e
".[distributed]"`` (dask[distributed], pyarrow).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .compare import Comparison, SpecLoading, architecture_of, check_settings, split_options, compare_with_base, comparisons_to_json, inspect_for_labels, label_comparison, load_checkpoint, load_comparisons, parse_checkpoint_spec, prepare_base
from ..core.errors import WeightscopeError
from ..core.fileio import write_atomic

EXTRA = 'pip install -e ".[distributed]"'
COLUMNS = ("label", "spec", "status", "seconds", "rel_change", "in_basis_share", "off_basis_share",
           "changed_heads", "stable", "reweighted", "rotated", "intruders", "mean_match_cos", "key", "error")


# --------------------------------------------------------------------------------------------------- inputs


def read_manifest(path: str | Path) -> list[tuple[str, str]]:
    """(label, spec) pairs from a manifest: one checkpoint spec per line (blank lines and # comments skipped;
    label: the file name), or a CSV whose header names a ``checkpoint`` (or ``spec`` / ``path``) column and
    optionally a ``label`` column. Relative file paths are taken relative to the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise WeightscopeError(f"manifest file not found: {path}")
    text = path.read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise WeightscopeError(f"manifest {path} lists no checkpoint")
    head = [h.strip().lower() for h in lines[0].split(",")]
    if len(head) > 1 or head[0] in ("checkpoint", "spec", "path", "label"):
        col = next((c for c in ("checkpoint", "spec", "path") if c in head), None)
        if col is None:
            raise WeightscopeError(f"manifest {path}: a CSV needs a 'checkpoint' column (header: {lines[0]!r})")
        rows = list(csv.DictReader(io.StringIO("\n".join(lines)), fieldnames=head))[1:]
        pairs = [((r.get("label") or "").strip(), (r.get(col) or "").strip()) for r in rows]
    else:
        pairs = [("", ln) for ln in lines]
    out = []
    for label, spec in pairs:
        if not spec:
            raise WeightscopeError(f"manifest {path}: a row has no checkpoint ({label!r})")
        local = path.parent / spec
        if not Path(spec).is_absolute() and local.is_file():
            spec = str(local)
        out.append((label or Path(spec).name, spec))
    return out


def _as_pairs(tuned) -> list[tuple[str, str]]:
    pairs = [(t if isinstance(t, (tuple, list)) else (Path(t).name, t)) for t in tuned]
    labels = [p[0] for p in pairs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise WeightscopeError(f"checkpoint labels must be unique, {dup} repeats; label them in a CSV manifest")
    return [(str(a), str(b)) for a, b in pairs]


def content_key(spec: str, model: str | None, extra: dict, loading: SpecLoading | None = None) -> str:
    """sha256 over the checkpoint's content (a file's bytes, else its spec) and ``extra`` (options, base key).
    loading: names the files of "bundled:TAG" specs (``SpecLoading.named_files``)."""
    from ..models.load import BUNDLED

    h = hashlib.sha256()
    args = parse_checkpoint_spec(spec, model)
    target = args["checkpoint"] or (args["pretrained"] if args["pretrained"] and Path(args["pretrained"]).is_file()
                                    else None)
    if args["model"] == BUNDLED:
        target = (loading.named_files if loading else {}).get(args["pretrained"])
        if target is None:
            raise WeightscopeError(f"{spec}: the bundled checkpoints are compared through weightscope.bundled "
                                   "(the command line or the top-level API)")
    if target is not None:
        if not Path(target).is_file():
            raise WeightscopeError(f"checkpoint file not found: {target}")
        with open(target, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    else:
        h.update(spec.encode())
    h.update(str(args["model"]).encode())
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


# --------------------------------------------------------------------------------------------------- one task


def compare_task(prepared, label: str, spec: str, arch: str, options: dict, out_dir: str | None,
                 key_extra: dict, base_inspection=None, label_opts: dict | None = None,
                 loading: SpecLoading | None = None) -> dict:
    """Load one checkpoint, compare it with the prepared base, write OUT/results/KEY.json; never raises.

    Returns a row of the summary table (``COLUMNS``) plus "comparison" (the Comparison when not written to disk).
    """
    import torch

    from ..models.adapters import describe_model

    torch.set_num_threads(1)
    t0 = time.time()
    row = {"label": label, "spec": spec, "status": "failed", "key": "", "error": ""}
    try:
        key = content_key(spec, arch, key_extra, loading)
        row["key"] = key
        path = Path(out_dir) / "results" / f"{key}.json" if out_dir else None
        if path is not None and path.is_file():
            comparison = load_comparisons(path)[0]
            row.update(status="skipped")
        else:
            loaded = load_checkpoint(spec, arch, loading)
            comparison = compare_with_base(prepared, describe_model(loaded), label, progress=False, **options)
            comparison.settings["spec"] = spec
            if base_inspection is not None:
                label_comparison(comparison, base_inspection,
                                 inspect_for_labels(loaded, progress=False, **(label_opts or {})))
            del loaded
            if path is not None:
                comparison.to_json(path)
            row.update(status="done")
        row.update(_numbers(comparison))
        row["comparison"] = None if path is not None else comparison
    except Exception as err:  # noqa: BLE001 -- one bad checkpoint must not stop the others; reported per row
        row["error"] = _one_line(err)
    row["seconds"] = round(time.time() - t0, 2)
    return row


def _one_line(err: BaseException) -> str:
    """A failure as one line: our own errors as they are, others with their type (they are not user mistakes)."""
    text = " ".join(str(err).split())
    return (text if isinstance(err, WeightscopeError) else f"{type(err).__name__}: {text}")[:300]


def _numbers(c: Comparison) -> dict:
    t = c.totals()
    return {"rel_change": t["rel_change"], "in_basis_share": t["in_basis_share"],
            "off_basis_share": t["off_basis_share"], "changed_heads": t["changed_heads"], "stable": t["stable"],
            "reweighted": t["reweighted"], "rotated": t["rotated"],
            "intruders": c.intruder_counts([c.settings["epsilon"]])[c.settings["epsilon"]],
            "mean_match_cos": t["mean_match_cos"]}


# --------------------------------------------------------------------------------------------------- the run


@dataclass
class HarnessResult:
    """rows: one summary row per checkpoint (``COLUMNS``), in input order; comparisons: those that succeeded, in
    input order; written: {name: path}; where: "in-process", "local cluster (N workers)" or the scheduler address;
    notes: one-line remarks (e.g. Parquet skipped)."""

    rows: list[dict]
    comparisons: list[Comparison]
    written: dict = field(default_factory=dict)
    where: str = "in-process"
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "failed"]

    @property
    def skipped(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "skipped"]

    def table(self) -> str:
        from .compare.results import text_table

        cols = ("label", "status", "rel_change", "in_basis_share", "changed_heads", "reweighted", "rotated",
                "intruders", "seconds", "error")
        fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
        return text_table(list(cols), [[fmt(r.get(c)) for c in cols] for r in self.rows])


def have_distributed() -> bool:
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        return False
    return True


def default_workers(n_tasks: int, specs: list[str], model: str | None) -> int:
    """Workers for a LocalCluster: min(CPU cores, tasks, available memory / one task's estimated memory).

    A task holds one tuned model (its file size in float32: x2 for fp16 files, plus its float64 description, x2
    again) and the shared base: about 6 x the largest checkpoint file, at least 1 GiB."""
    import psutil

    sizes = []
    for spec in specs:
        try:
            ckpt = parse_checkpoint_spec(spec, model)["checkpoint"]
            sizes.append(Path(ckpt).stat().st_size if ckpt else 0)
        except (WeightscopeError, OSError):
            sizes.append(0)
    per_task = max(6 * max(sizes, default=0), 1 << 30)
    by_memory = int(psutil.virtual_memory().available // per_task)
    return max(1, min(os.cpu_count() or 1, n_tasks, by_memory))


def run_harness(base: str, tuned, out_dir: str | Path | None = None, *, scheduler: str | None = None,
                workers: int | None = None, in_process: bool = False, explainer=None, n_directions: int | None = None,
                progress: bool = True, report=None, loading: SpecLoading | None = None, **options) -> HarnessResult:
    """Compare ``base`` (a spec) with every tuned checkpoint and write the summary (see the module doc).

    tuned: specs or (label, spec) pairs (labels unique); out_dir: where results and reports go (None: nothing is
    written, nothing resumes); scheduler / workers / in_process: where to run; explainer, n_directions: concept
    labels of the leading directions (a ``ConceptExplainer``; None: no labels); options: the decomposition (layers,
    heads, kind "vo" / "qk" / "mlp", fold_ln, center_write, rtol) and the thresholds (``compare.DEFAULTS``); loading:
    how specs are loaded and the architecture of bare checkpoint paths (``compare.SpecLoading``; default: the
    base's); report: a page writer ``(comparisons, out, rows=...) -> {name: path}`` such as
    ``weightscope.reports.compare.write_report`` (None: only compare.json). Bad arguments raise WeightscopeError
    before anything is loaded.
    """
    loading = loading or SpecLoading()
    model = loading.model
    decompose, options = split_options(options)
    pairs = _as_pairs(tuned)
    if not pairs:
        raise WeightscopeError("give at least one tuned checkpoint (or a --manifest) to compare with the base")
    settings = check_settings(**options)
    if scheduler and in_process:
        raise WeightscopeError("--scheduler and --in-process exclude each other: choose one")
    if workers is not None and workers < 1:
        raise WeightscopeError(f"workers must be >= 1, got {workers}")
    if scheduler and not have_distributed():
        raise WeightscopeError(f"--scheduler needs dask.distributed: {EXTRA}")
    for _, spec in pairs:
        parse_checkpoint_spec(spec, model or "architecture")   # syntax only; the architecture comes later
    if explainer is not None:
        explainer.check()

    from ..models.adapters import describe_model

    base_loaded = load_checkpoint(base, model, loading)
    arch = model or architecture_of(base_loaded)
    base_w = describe_model(base_loaded)
    prepared = prepare_base(base_w, base_loaded.identity, progress=progress, **decompose)
    label_opts = {"explainer": explainer, "n_directions": n_directions, "layers": decompose.get("layers"),
                  "heads": decompose.get("heads")}
    base_insp = inspect_for_labels(base_loaded, progress=progress, **label_opts) if explainer is not None else None
    del base_loaded, base_w
    labels = None if explainer is None else {**explainer.settings(), "vocabulary": explainer.description}
    key_extra = {"base": content_key(base, model, {}, loading), "options": settings, "decompose": prepared.options,
                 "label": [labels, n_directions]}
    out = Path(out_dir) if out_dir is not None else None
    args = (arch, options, str(out) if out else None, key_extra)

    use_dask = not in_process and have_distributed() and (scheduler is not None or len(pairs) > 1)
    notes = []
    if not in_process and not have_distributed() and len(pairs) > 1:
        notes.append(f"dask.distributed not installed: compared in-process ({EXTRA} for a cluster)")
    if use_dask:
        rows, where = _run_dask(pairs, prepared, args, base_insp, label_opts, scheduler, workers, model, progress,
                                loading)
    else:
        rows = _run_local(pairs, prepared, args, base_insp, label_opts, progress, loading)
        where = "in-process"
    comparisons = []
    for row in rows:
        c = row.pop("comparison", None)
        if c is None and row["status"] != "failed" and out is not None:
            c = load_comparisons(out / "results" / f"{row['key']}.json")[0]
        if c is not None:
            comparisons.append(c)
    result = HarnessResult(rows, comparisons, where=where, notes=notes)
    if out is not None:
        _write_outputs(result, out, report, progress)
    return result


def _run_local(pairs, prepared, args, base_insp, label_opts, progress, loading) -> list[dict]:
    from tqdm.auto import tqdm

    return [compare_task(prepared, lab, spec, *args, base_inspection=base_insp, label_opts=label_opts,
                         loading=loading)
            for lab, spec in tqdm(pairs, desc="checkpoints", unit="ckpt", disable=not progress)]


def _quiet_distributed() -> None:
    """Dask's INFO chatter (scheduler start, worker registration, nanny kills) is not for our users: errors only."""
    import logging

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("distributed")] + ["distributed"]:
        logging.getLogger(name).setLevel(logging.ERROR)


def _run_dask(pairs, prepared, args, base_insp, label_opts, scheduler, workers, model, progress, loading):
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm.auto import tqdm

    _quiet_distributed()
    cluster = None
    if scheduler:
        client, where = Client(scheduler), scheduler
    else:
        n = workers or default_workers(len(pairs), [s for _, s in pairs], model)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=40, scheduler_kwargs={"dashboard": False})
        client, where = Client(cluster), f"local cluster ({n} workers)"
    try:
        shared = client.scatter(prepared, broadcast=True)
        insp = client.scatter(base_insp, broadcast=True) if base_insp is not None else None
        futures = {client.submit(compare_task, shared, lab, spec, *args, base_inspection=insp, label_opts=label_opts,
                                 loading=loading, pure=False, key=f"compare-{i}"): i for i, (lab, spec) in enumerate(pairs)}
        rows: list[dict | None] = [None] * len(pairs)
        for fut in tqdm(as_completed(futures), total=len(futures), desc="checkpoints", unit="ckpt",
                        disable=not progress):
            i = futures[fut]
            try:
                rows[i] = fut.result()
            except Exception as err:  # noqa: BLE001 -- a worker that died (e.g. out of memory) fails one row
                rows[i] = {"label": pairs[i][0], "spec": pairs[i][1], "status": "failed", "key": "",
                           "error": _one_line(err)}
        return rows, where
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _write_outputs(result: HarnessResult, out: Path, report, progress: bool) -> None:
    rows = [{c: r.get(c) for c in COLUMNS} for r in result.rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    result.written["csv"] = write_atomic(out / "summary.csv", buf.getvalue())
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        result.notes.append(f"summary.parquet skipped: pyarrow is not installed ({EXTRA})")
    else:
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), sink)
        result.written["parquet"] = write_atomic(out / "summary.parquet", sink.getvalue())
    if result.comparisons:
        if report is not None:
            result.written.update(report(result.comparisons, out, rows=result.rows))
        else:
            result.written["json"] = out / "compare.json"
            comparisons_to_json(result.comparisons, result.written["json"])
