"""The comparison harness in-process vs on a local Dask cluster: N checkpoints of a random-init ViT-B-16.

    python benchmarks/bench_harness.py --n 4 --workers 2

Makes a base (random init, seed 0) and N "fine-tunes" (the base plus 1 % Gaussian noise on every attention
in/out projection; seeds 1..N), saved as fp32 safetensors in a temporary folder, then runs
``weightscope.analyses.harness.run_harness`` twice on them, in-process and on a ``LocalCluster`` of ``--workers``
single-threaded processes, into fresh output folders (nothing reused). Prints wall time of each, the speed-up, and
the peak resident memory (VmHWM of /proc/self/status: the high-water mark of the process's own memory, which a
spawned process does not inherit, unlike ru_maxrss) of the in-process run (in a fresh process) and of each worker
(one tuned checkpoint in memory per task, plus the scattered base decomposition).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def make_checkpoints(folder: Path, n: int, model: str, noise: float) -> list[str]:
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    base = open_clip.create_model(model, pretrained=None)
    state = {k: v.detach().contiguous() for k, v in base.state_dict().items()}
    save_file(state, str(folder / "base.safetensors"))
    paths = []
    for i in range(1, n + 1):
        g = torch.Generator().manual_seed(i)
        tuned = {k: (v + noise * v.std() * torch.randn(v.shape, generator=g)
                     if k.startswith("visual.") and "attn" in k and v.ndim == 2 else v) for k, v in state.items()}
        path = folder / f"tuned-{i}.safetensors"
        save_file(tuned, str(path))
        paths.append(str(path))
    return paths


def peak_mib() -> float:
    """This process's peak resident memory (VmHWM) in MiB (Linux)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024.0


def _warm_up() -> None:
    import open_clip  # noqa: F401
    import torch  # noqa: F401

    import weightscope.analyses.harness  # noqa: F401


def in_process(base: str, specs: list[str], out: str, model: str) -> tuple[float, list, float]:
    """The in-process run, meant for a fresh process: (seconds, comparisons, peak MiB)."""
    import torch

    from weightscope.analyses.harness import run_harness
    from weightscope.bundled import spec_loading

    torch.set_num_threads(1)
    t0 = time.time()
    res = run_harness(base, specs, out, in_process=True, progress=False, loading=spec_loading(model=model))
    assert all(r["status"] == "done" for r in res.rows), [r["error"] for r in res.rows]
    return time.time() - t0, [c.energy_total for c in res.comparisons], peak_mib()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--n", type=int, default=4, help="tuned checkpoints (default 4)")
    p.add_argument("--workers", type=int, default=2, help="local cluster workers (default 2)")
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--noise", type=float, default=0.01, help="relative noise of the fake fine-tunes (default 0.01)")
    a = p.parse_args(argv)
    import torch
    from dask.distributed import Client, LocalCluster

    from weightscope.analyses.harness import run_harness
    from weightscope.bundled import spec_loading

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-harness-") as tmp:
        tmp = Path(tmp)
        t0 = time.time()
        specs = make_checkpoints(tmp, a.n, a.model, a.noise)
        print(f"made {a.n} {a.model} checkpoints in {time.time() - t0:.0f} s", flush=True)
        base = str(tmp / "base.safetensors")

        with multiprocessing.get_context("spawn").Pool(1) as pool:
            t_local, local_energy, rss_local = pool.apply(in_process, (base, specs, str(tmp / "in-process"), a.model))

        cluster = LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=40)
        with Client(cluster) as client:   # the in-process run imported these before its clock started: so do workers
            client.run(_warm_up)
        t0 = time.time()
        dist = run_harness(base, specs, tmp / "cluster", scheduler=cluster.scheduler_address, progress=False,
                           loading=spec_loading(model=a.model))
        t_dist = time.time() - t0
        with Client(cluster) as client:
            rss = client.run(peak_mib)
        cluster.close()

    assert [r["status"] for r in dist.rows] == ["done"] * a.n, [r.get("error") for r in dist.rows]
    same = all(abs(x - y.energy_total) <= 1e-9 * x for x, y in zip(local_energy, dist.comparisons))
    print(f"{a.n} x {a.model}: in-process {t_local:.1f} s, local cluster ({a.workers} workers, started and "
          f"imports warm) {t_dist:.1f} s, speed-up {t_local / t_dist:.2f}x; results identical: {same}")
    print(f"peak memory: in-process run {rss_local:.0f} MiB (base + one tuned checkpoint at a time); "
          "per worker " + ", ".join(f"{v:.0f} MiB" for v in rss.values()))
    print(f"cpu cores: {os.cpu_count()}; per-checkpoint seconds on the cluster: "
          + ", ".join(f"{r['seconds']:.1f}" for r in dist.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
