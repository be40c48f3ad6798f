"""Dask clusters on batch schedulers (SLURM, PBS, SGE) through dask-jobqueue, from a small config file.

The file (TOML or JSON) holds the keyword arguments of the dask-jobqueue cluster class -- at least ``cores`` and
``memory``; usually ``queue``, ``walltime``, ``account``, ``job_extra_directives`` -- plus ``jobs``: how many batch
jobs to start (default: one per checkpoint, at most 8). Example (slurm.toml)::

    queue = "gpu"
    cores = 4
    memory = "32GB"
    walltime = "02:00:00"
    jobs = 4

Kind ``local`` is dask-jobqueue's own ``LocalCluster`` (jobs are local processes): the same code path without a
scheduler, for tests and dry runs. Extra: ``pip install -e ".[jobqueue]"``.
"""
from __future__ import annotations

import json
from pathlib import Path

from ...core.errors import WeightscopeError

KINDS = ("slurm", "pbs", "sge", "local")
EXTRA = 'pip install -e ".[jobqueue]"'
_CLASSES = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster"}


def read_cluster_config(path: str | Path | None) -> dict:
    """The config file as a dict (empty for None); one-line WeightscopeError for a missing or unreadable file."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise WeightscopeError(f"cluster config file not found: {path} (TOML or JSON: queue, cores, memory, walltime)")
    text = path.read_text(encoding="utf-8-sig")
    try:
        if path.suffix.lower() == ".json":
            cfg = json.loads(text)
        else:
            import tomllib

            cfg = tomllib.loads(text)
    except ValueError as err:
        raise WeightscopeError(f"cannot read cluster config {path}: {' '.join(str(err).split())}") from None
    if not isinstance(cfg, dict):
        raise WeightscopeError(f"cluster config {path} must be a table of settings, got {type(cfg).__name__}")
    return cfg


def check_cluster(kind: str, config: dict) -> None:
    """Cheap checks before any model is loaded: the kind, the extra, ``cores`` and ``memory`` for a real scheduler."""
    if kind not in KINDS:
        raise WeightscopeError(f"unknown cluster kind {kind!r}; choose from {', '.join(KINDS)}")
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        raise WeightscopeError(f"--cluster needs dask-jobqueue: {EXTRA}") from None
    missing = [k for k in ("cores", "memory") if kind != "local" and k not in config]
    if missing:
        raise WeightscopeError(f"--cluster {kind} needs {' and '.join(missing)} in the cluster config "
                               "(e.g. cores = 4, memory = \"16GB\")")
    jobs = config.get("jobs", 1)
    if not isinstance(jobs, int) or jobs < 1:
        raise WeightscopeError(f"cluster config: jobs must be a whole number >= 1, got {jobs!r}")


def start_cluster(kind: str, config: dict, n_tasks: int):
    """(cluster, client, description): the cluster scaled to ``jobs`` batch jobs, and a client connected to it."""
    import dask_jobqueue
    from dask.distributed import Client

    check_cluster(kind, config)
    kwargs = {k: v for k, v in config.items() if k != "jobs"}
    kwargs.setdefault("cores", 1)
    kwargs.setdefault("memory", "2GB")
    if kind == "local":
        kwargs.setdefault("processes", 1)
    jobs = int(config.get("jobs", min(max(n_tasks, 1), 8)))
    if kind == "local":
        from dask_jobqueue.local import LocalCluster as cls
    else:
        cls = getattr(dask_jobqueue, _CLASSES[kind])
    kwargs.setdefault("scheduler_options", {"dashboard_address": None})
    cluster = cls(**kwargs)
    try:
        cluster.scale(jobs=jobs)
        client = Client(cluster)
    except Exception:
        cluster.close()
        raise
    return cluster, client, f"{kind} cluster ({jobs} job{'s' * (jobs != 1)})"
