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

Saved results are verified when read (``zoo.store``: a checksummed envelope naming its key): one that does not
parse or verify (truncated, partly copied, edited) is recomputed, and the row's ``note`` names the file replaced.

Where it runs: ``scheduler`` (an address such as tcp://host:8786) uses an existing Dask cluster; ``scheduler=(kind,
config)`` (kind "slurm", "pbs", "sge", or "local" for dask-jobqueue's local test cluster; config as in
``zoo.jobqueue``) starts batch jobs through dask-jobqueue; otherwise, with ``dask.distributed`` installed and
more than one checkpoint to compare, a ``LocalCluster`` of single-threaded worker processes sized to the machine
(CPU cores, and available memory over an estimate of one task's memory); without it (or with
``in_process=True``) the same tasks run one after another here. Extra: ``pip install -e ".[distributed]"``
(dask[distributed], pyarrow).

Any scheduler, one process per slice: ``in_process=(i, n)`` compares only the i-th of n slices of the checkpoints
(every n-th, starting at the i-th, 1-based) in this process, and writes ``plan.json`` (the whole run) and
``shards/I-of-N.json`` (its rows) instead of the summary; :func:`merge_harness` then builds the summary, tables and
report from what the shards saved and lists the checkpoints of shards that are missing or damaged.
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

from .compare import Comparison, SpecLoading, architecture_of, check_settings, split_options, compare_with_base, comparisons_to_json, inspect_for_labels, label_comparison, load_checkpoint, parse_checkpoint_spec, prepare_base
from .zoo.store import DamagedResult, read_saved, write_saved
from ..core.errors import WeightscopeError
from ..core.fileio import write_atomic

EXTRA = 'pip install -e ".[distributed]"'
COLUMNS = ("label", "spec", "status", "seconds", "rel_change", "in_basis_share", "off_basis_share",
           "changed_heads", "stable", "reweighted", "rotated", "intruders", "mean_match_cos", "key", "error", "note")


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


def result_path(out_dir: str | Path, key: str) -> Path:
    return Path(out_dir) / "results" / f"{key}.json"


def read_result(out_dir: str | Path, key: str) -> tuple[Comparison, dict]:
    """(comparison, extras) saved for ``key``; raises zoo.store.DamagedResult unless the file parses and verifies."""
    path = result_path(out_dir, key)
    body = read_saved(path, "comparison", key)
    try:
        comparison = Comparison.from_dict(body["comparison"])
    except (KeyError, TypeError, ValueError, WeightscopeError) as err:
        raise DamagedResult(f"{path} holds no readable comparison ({type(err).__name__})") from None
    return comparison, {k: v for k, v in body.items() if k != "comparison"}


def compare_task(prepared, label: str, spec: str, arch: str, options: dict, out_dir: str | None,
                 key_extra: dict, base_inspection=None, label_opts: dict | None = None,
                 loading: SpecLoading | None = None) -> dict:
    """Load one checkpoint, compare it with the prepared base, write OUT/results/KEY.json; never raises.

    A saved result that does not parse or verify is recomputed and replaced (the row's "note" says so).
    With ``key_extra["zoo"]`` the checkpoint's spectra (``zoo.spectra.model_spectra``) are saved with it.
    Returns a row of the summary table (``COLUMNS``) plus "comparison" (the Comparison when not written to disk).
    """
    import torch

    from ..models.adapters import describe_model

    torch.set_num_threads(1)
    t0 = time.time()
    row = {"label": label, "spec": spec, "status": "failed", "key": "", "error": "", "note": ""}
    try:
        key = content_key(spec, arch, key_extra, loading)
        row["key"] = key
        path = result_path(out_dir, key) if out_dir else None
        comparison = None
        if path is not None and path.exists():
            try:
                comparison, _ = read_result(out_dir, key)
                row.update(status="skipped")
            except DamagedResult as err:
                row["note"] = f"recomputed: {err}"
        if comparison is None:
            loaded = load_checkpoint(spec, arch, loading)
            weights = describe_model(loaded)
            comparison = compare_with_base(prepared, weights, label, progress=False, **options)
            comparison.settings["spec"] = spec
            if base_inspection is not None:
                label_comparison(comparison, base_inspection,
                                 inspect_for_labels(loaded, progress=False, **(label_opts or {})))
            extras = {}
            if key_extra.get("zoo"):
                from .zoo.spectra import model_spectra

                extras["spectra"] = model_spectra(weights)
            del loaded, weights
            if path is not None:
                write_saved(path, "comparison", key, {"comparison": comparison.to_dict(), **extras})
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
    input order; written: {name: path}; where: "in-process", "local cluster (N workers)", a jobqueue cluster, "merged
    from N shard(s)" or the scheduler address; notes: one-line remarks (e.g. Parquet skipped, missing shards)."""

    rows: list[dict]
    comparisons: list[Comparison]
    written: dict = field(default_factory=dict)
    where: str = "in-process"
    notes: list[str] = field(default_factory=list)
    zoo: object = None   # the zoo analysis (zoo.analysis.Zoo) when asked for

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "failed"]

    @property
    def skipped(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "skipped"]

    @property
    def missing(self) -> list[dict]:
        """Rows of a merge whose shard saved nothing usable (see :func:`merge_harness`)."""
        return [r for r in self.rows if r["status"] == "missing"]

    @property
    def replaced(self) -> list[dict]:
        """Rows whose saved result was damaged and has been recomputed."""
        return [r for r in self.rows if str(r.get("note", "")).startswith("recomputed")]

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


def parse_shard(text) -> tuple[int, int]:
    """'I/N' (or a pair) -> (I, N) with 1 <= I <= N; a one-line WeightscopeError otherwise."""
    if isinstance(text, (tuple, list)):
        i, n = text
    else:
        parts = str(text).replace("of", "/").split("/")
        try:
            i, n = (int(x) for x in parts)
        except ValueError:
            raise WeightscopeError(f"cannot read shard {text!r}: write I/N, e.g. 3/8 (the 3rd of 8 slices)") from None
    if not (isinstance(i, int) and isinstance(n, int) and 1 <= i <= n):
        raise WeightscopeError(f"shard {i}/{n}: need 1 <= I <= N (slices are numbered from 1, as SLURM array "
                               "indices given with --array=1-N)")
    return i, n


def run_harness(base: str, tuned, out_dir: str | Path | None = None, *, scheduler=None,
                workers: int | None = None, in_process=False, explainer=None, n_directions: int | None = None,
                progress: bool = True, report=None, loading: SpecLoading | None = None, **options) -> HarnessResult:
    """Compare ``base`` (a spec) with every tuned checkpoint and write the summary (see the module doc).

    tuned: specs or (label, spec) pairs (labels unique); out_dir: where results and reports go (None: nothing is
    written, nothing resumes). Where to run: scheduler: a Dask scheduler's address, or (kind, config) to start
    one through dask-jobqueue (kind "slurm" / "pbs" / "sge" / "local", config as ``zoo.jobqueue``); workers: the
    local cluster's size; in_process: True, or a shard (I, N) / "I/N": only the I-th of N slices, here (needs
    out_dir; writes no summary: see :func:`merge_harness`). explainer, n_directions: concept labels of the
    leading directions (a ``ConceptExplainer``; None: no labels); options: the decomposition (layers, heads, kind
    "vo" / "qk" / "mlp", fold_ln, center_write, rtol), the thresholds (``compare.DEFAULTS``) and ``zoo``: a zoo
    page writer ``(zoo, path, comparisons=...) -> path`` such as ``weightscope.reports.zoo.write_zoo_report``, or
    True for zoo.json alone: spectra per checkpoint, the family tree (``zoo.analysis.analyse_zoo``); loading: how
    specs are loaded and the architecture of bare checkpoint paths (``compare.SpecLoading``; default: the base's);
    report: a page writer ``(comparisons, out, rows=...) -> {name: path}`` such as
    ``weightscope.reports.compare.write_report`` (None: only compare.json). Bad arguments raise WeightscopeError
    before anything is loaded.
    """
    loading = loading or SpecLoading()
    model = loading.model
    zoo = options.pop("zoo", None)
    decompose, options = split_options(options)
    cluster = scheduler if isinstance(scheduler, (tuple, list)) else None
    scheduler = None if cluster else scheduler
    shard = None if isinstance(in_process, bool) else in_process
    in_process = in_process is True
    pairs = _as_pairs(tuned)
    if not pairs:
        raise WeightscopeError("give at least one tuned checkpoint (or a --manifest) to compare with the base")
    settings = check_settings(**options)
    placed = [n for n, v in (("--scheduler", scheduler), ("--in-process", in_process), ("--cluster", cluster),
                             ("--shard", shard)) if v]
    if len(placed) > 1:
        raise WeightscopeError(f"{' and '.join(placed)} exclude each other: choose one")
    if workers is not None and workers < 1:
        raise WeightscopeError(f"workers must be >= 1, got {workers}")
    if workers is not None and (shard or cluster):
        raise WeightscopeError("--workers sizes the local cluster; it does not apply to --shard or --cluster")
    if scheduler and not have_distributed():
        raise WeightscopeError(f"--scheduler needs dask.distributed: {EXTRA}")
    if cluster:
        from .zoo.jobqueue import check_cluster

        check_cluster(*cluster)
    if shard:
        shard = parse_shard(shard)
        if out_dir is None:
            raise WeightscopeError("--shard needs --out DIR (the shards' results meet there for --merge)")
    for _, spec in pairs:
        parse_checkpoint_spec(spec, model or "architecture")   # syntax only; the architecture comes later
    if explainer is not None:
        explainer.check()
    out = Path(out_dir) if out_dir is not None else None
    todo = pairs[shard[0] - 1::shard[1]] if shard else pairs

    from ..models.adapters import describe_model

    base_loaded = load_checkpoint(base, model, loading)
    arch = model or architecture_of(base_loaded)
    label_opts = {"explainer": explainer, "n_directions": n_directions, "layers": decompose.get("layers"),
                  "heads": decompose.get("heads")}
    labels = None if explainer is None else {**explainer.settings(), "vocabulary": explainer.description}
    key_extra = {"base": content_key(base, model, {}, loading), "options": settings, "label": [labels, n_directions]}
    prepared = base_insp = None
    if todo:
        base_w = describe_model(base_loaded)
        prepared = prepare_base(base_w, base_loaded.identity, progress=progress, **decompose)
        base_insp = inspect_for_labels(base_loaded, progress=progress, **label_opts) if explainer is not None else None
        key_extra["decompose"] = prepared.options
        del base_w
    del base_loaded
    if zoo:
        key_extra["zoo"] = True
    if shard:
        plan = {"base": base, "model": arch, "pairs": [list(p) for p in pairs], "shards": shard[1],
                "zoo": bool(zoo), "trust_checkpoint": loading.trust_checkpoint,
                "key_extra": {k: v for k, v in key_extra.items() if k != "decompose"}}
        _write_plan(out, plan)
    args = (arch, options, str(out) if out else None, key_extra)

    use_dask = not in_process and not shard and (
        cluster is not None or (have_distributed() and (scheduler is not None or len(todo) > 1)))
    notes = []
    if not in_process and not shard and not have_distributed() and len(todo) > 1:
        notes.append(f"dask.distributed not installed: compared in-process ({EXTRA} for a cluster)")
    if use_dask:
        rows, where = _run_dask(todo, prepared, args, base_insp, label_opts, (scheduler, cluster, workers), model,
                                progress, loading)
    else:
        rows = _run_local(todo, prepared, args, base_insp, label_opts, progress, loading)
        where = f"in-process (shard {shard[0]}/{shard[1]})" if shard else "in-process"
    if shard:
        write_saved(_shard_path(out, *shard), "shard", f"{shard[0]}-of-{shard[1]}",
                    {"rows": [{c: r.get(c) for c in COLUMNS} for r in rows]})
        return HarnessResult([{c: r.get(c) for c in COLUMNS} for r in rows], [], where=where, notes=notes)
    result = HarnessResult(rows, _collect(rows, out), where=where, notes=notes)
    if out is not None:
        _write_outputs(result, out, report, zoo_of(base, arch, rows, out, loading, progress) if zoo else None, zoo)
    return result


def _collect(rows: list[dict], out: Path | None) -> list[Comparison]:
    """The comparisons of the finished rows, in row order, each read back verified when it was written to disk."""
    comparisons = []
    for row in rows:
        c = row.pop("comparison", None)
        if c is None and row["status"] in ("done", "skipped") and out is not None:
            try:
                c = read_result(out, row["key"])[0]
            except DamagedResult as err:   # changed since its task wrote it: not done
                row.update(status="failed", error=f"{err}; rerun to recompute it")
        if c is not None:
            comparisons.append(c)
    return comparisons


def zoo_of(base: str, arch: str, rows: list[dict], out: Path, loading: SpecLoading | None, progress: bool):
    """The zoo analysis (``zoo.analyse_zoo``) of the finished rows, their spectra read from their saved results."""
    from .zoo.analysis import analyse_zoo

    members, spectra = [], {}
    for row in rows:
        if row["status"] in ("done", "skipped"):
            members.append((row["label"], row["spec"]))
            spectra[row["label"]] = read_result(out, row["key"])[1].get("spectra")
    return analyse_zoo(base, members, model=arch, spectra=spectra, loading=loading, progress=progress)


# --------------------------------------------------------------------------------------------------- shards


def _shard_path(out: Path, i: int, n: int) -> Path:
    return out / "shards" / f"{i}-of-{n}.json"


def _write_plan(out: Path, plan: dict) -> None:
    """plan.json: what the whole sharded run covers. Every shard writes the same one; a plan of another run (other
    checkpoints, base, options or shard count) in the same folder is refused, a damaged one replaced."""
    path = out / "plan.json"
    if path.exists():
        try:
            old = read_saved(path, "plan", "plan")
        except DamagedResult:
            old = None
        if old is not None and old != json.loads(json.dumps(plan, default=str)):
            what = [k for k in plan if old.get(k) != json.loads(json.dumps(plan[k], default=str))]
            raise WeightscopeError(f"{out} holds shards of another run (its {', '.join(what)} differ); "
                                   "use another --out, or delete that folder's plan.json, shards/ and results/")
    write_saved(path, "plan", "plan", json.loads(json.dumps(plan, default=str)))


def merge_harness(out_dir: str | Path, *, report=None, zoo=None, loading: SpecLoading | None = None,
                  progress: bool = True) -> HarnessResult:
    """Build the summary, tables and report of a sharded run from what its shards saved in ``out_dir``.

    Reads ``plan.json`` and every ``shards/I-of-N.json``; a checkpoint whose shard record is missing or damaged,
    or whose saved result no longer verifies, gets status "missing" and a note naming the shard to rerun
    (``HarnessResult.missing``): nothing is skipped silently and nothing damaged is read as done. The outputs are
    those of one :func:`run_harness` over all checkpoints. report, zoo: page writers as :func:`run_harness` takes
    them (the zoo part runs when the shards computed it); loading: as there (its model and trust_checkpoint are
    the plan's). Raises WeightscopeError when there is no plan.
    """
    out = Path(out_dir)
    if not (out / "plan.json").exists():
        raise WeightscopeError(f"{out} holds no sharded run (no plan.json); run the shards with --shard I/N --out {out}")
    try:
        plan = read_saved(out / "plan.json", "plan", "plan")
    except DamagedResult as err:
        raise WeightscopeError(f"{err}; rerun any one shard to rewrite it") from None
    n = plan["shards"]
    pairs = [tuple(p) for p in plan["pairs"]]
    found, notes = {}, []
    for i in range(1, n + 1):
        path = _shard_path(out, i, n)
        try:
            rows = read_saved(path, "shard", f"{i}-of-{n}")["rows"]
        except DamagedResult as err:
            if path.exists():
                notes.append(f"shard {i}/{n} ignored: {err}")
            continue
        found.update({r["label"]: r for r in rows})
    rows = []
    for j, (lab, spec) in enumerate(pairs):
        i = j % n + 1
        row = found.get(lab)
        if row is None or row.get("spec") != spec:
            row = {"label": lab, "spec": spec, "status": "missing", "key": "", "error": "",
                   "note": f"shard {i}/{n} saved no result: rerun it"}
        rows.append(dict(row))
    comparisons = []
    for row in rows:
        if row["status"] in ("done", "skipped"):
            try:
                comparisons.append(read_result(out, row["key"])[0])
            except DamagedResult as err:
                row.update(status="missing", note=f"{err}: rerun shard {pairs.index((row['label'], row['spec'])) % n + 1}/{n} to recompute it")
    missing = [r for r in rows if r["status"] == "missing"]
    if missing:
        notes.append(f"{len(missing)} of {len(rows)} checkpoint(s) missing: " +
                     ", ".join(f"{r['label']} ({r['note']})" for r in missing))
    result = HarnessResult(rows, comparisons, where=f"merged from {n} shard(s)", notes=notes)
    found_zoo = None
    if plan.get("zoo") and comparisons:
        from dataclasses import replace

        loading = replace(loading or SpecLoading(), model=plan["model"],
                          trust_checkpoint=plan.get("trust_checkpoint", False))
        found_zoo = zoo_of(plan["base"], plan["model"], rows, out, loading, progress)
    _write_outputs(result, out, report, found_zoo, zoo or True)
    return result


# --------------------------------------------------------------------------------------------------- running


def _run_local(pairs, prepared, args, base_insp, label_opts, progress, loading) -> list[dict]:
    from tqdm.auto import tqdm

    return [compare_task(prepared, lab, spec, *args, base_inspection=base_insp, label_opts=label_opts,
                         loading=loading)
            for lab, spec in tqdm(pairs, desc="checkpoints", unit="ckpt", disable=not progress)]


def _quiet_distributed() -> None:
    """Dask's INFO chatter (scheduler start, worker registration, nanny kills) is not for our users: errors only."""
    import logging

    for name in [n for n in logging.root.manager.loggerDict if n.startswith(("distributed", "dask_jobqueue"))] + [
            "distributed", "dask_jobqueue"]:
        logging.getLogger(name).setLevel(logging.ERROR)


def _start_client(where, n_tasks, specs, model):
    """(client, cluster or None, description) for where = (scheduler address, (kind, config) or None, workers)."""
    from dask.distributed import Client, LocalCluster

    scheduler, cluster, workers = where
    if scheduler:
        return Client(scheduler), None, scheduler
    if cluster:
        from .zoo.jobqueue import start_cluster

        c, client, text = start_cluster(cluster[0], cluster[1], n_tasks)
        return client, c, text
    n = workers or default_workers(n_tasks, specs, model)
    c = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                     silence_logs=40, scheduler_kwargs={"dashboard": False})
    return Client(c), c, f"local cluster ({n} workers)"


def _run_dask(pairs, prepared, args, base_insp, label_opts, where, model, progress, loading):
    from dask.distributed import as_completed
    from tqdm.auto import tqdm

    _quiet_distributed()
    client, cluster, where = _start_client(where, len(pairs), [s for _, s in pairs], model)
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
                           "error": _one_line(err), "note": ""}
        return rows, where
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _write_outputs(result: HarnessResult, out: Path, report, zoo=None, zoo_writer=None) -> None:
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
    if zoo is not None:
        result.zoo = zoo
        result.written["zoo_json"] = zoo.to_json(out / "zoo.json")
        if callable(zoo_writer):
            result.written["zoo_html"] = zoo_writer(zoo, out / "zoo.html", comparisons=result.comparisons)
