"""A zoo of random-init ViT-B-16 "fine-tunes" compared with their base: sharded in 2 processes vs in-process.

    python benchmarks/bench_zoo.py                       # 16 fine-tunes of ViT-B-16 (about 6 GB of files in --work)
    python benchmarks/bench_zoo.py --n 4 --model ViT-B-32 --work /tmp/zoo-small

The base is ``open_clip.create_model(MODEL, pretrained=None)`` (seed 0); fine-tune i adds seeded Gaussian noise of
relative size --scale to every weight of the image tower (so no two are alike), saved as float32 safetensors.
Then, each under ``/usr/bin/time -v`` (wall time, peak resident memory):

1. ``weightscope compare MODEL:base --manifest M --out IN --in-process``  (one process, one task after another)
2. ``weightscope compare ... --out SH --shard 1/2`` and ``--shard 2/2`` started together (two processes, as two
   tasks of an array job), then ``weightscope compare --merge SH``

and checks that the merged compare.json equals the in-process one. Printed: per-task seconds (summary.csv), each
process's wall time and peak memory. The machine is whatever runs it: say which, and whether it was shared.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path


def build_zoo(work: Path, model: str, n: int, scale: float) -> tuple[str, Path]:
    import open_clip
    import torch
    from safetensors.torch import save_file

    work.mkdir(parents=True, exist_ok=True)
    base_path = work / "base.safetensors"
    torch.manual_seed(0)
    base = open_clip.create_model(model, pretrained=None)
    state = {k: v.detach().float().contiguous() for k, v in base.state_dict().items()}
    if not base_path.is_file():
        save_file(state, str(base_path))
    lines = ["label,checkpoint"]
    for i in range(n):
        path = work / f"ft-{i:02d}.safetensors"
        lines.append(f"ft-{i:02d},{model}:{path}")
        if path.is_file():
            continue
        g = torch.Generator().manual_seed(1000 + i)
        tuned = {}
        for k, v in state.items():
            if k.startswith("visual.") and v.ndim >= 1 and v.numel() > 1:
                noise = torch.randn(v.shape, generator=g)
                v = v + scale * v.norm() / max(noise.norm(), 1e-12) * noise
            tuned[k] = v.contiguous()
        save_file(tuned, str(path))
        print(f"wrote {path}", flush=True)
    manifest = work / "zoo.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return f"{model}:{base_path}", manifest


def timed(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(["/usr/bin/time", "-v", sys.executable, "-m", "weightscope.cli", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def measure(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", err)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    seconds = (int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))) if wall else float("nan")
    return {"rc": proc.returncode, "wall_s": round(seconds, 1),
            "peak_gib": round(int(rss.group(1)) / 2 ** 20, 2) if rss else float("nan"), "stdout": out,
            "stderr": "\n".join(ln for ln in err.splitlines() if "error" in ln.lower())}


def task_seconds(summary: Path) -> list[float]:
    return [float(r["seconds"]) for r in csv.DictReader(summary.open())]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--scale", type=float, default=1e-3, help="relative size of each fine-tune's change")
    p.add_argument("--work", default="/tmp/weightscope-bench-zoo")
    a = p.parse_args(argv)
    work = Path(a.work)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.time()
    base, manifest = build_zoo(work, a.model, a.n, a.scale)
    print(f"zoo of {a.n} x {a.model} built in {time.time() - t0:.0f} s", flush=True)
    common = ["compare", base, "--manifest", str(manifest), "--quiet"]

    one = measure(timed([*common, "--out", str(work / "in-process"), "--in-process"]))
    per_task = task_seconds(work / "in-process" / "summary.csv")
    t1 = time.time()
    shards = [measure(pr) for pr in [timed([*common, "--out", str(work / "sharded"), "--shard", f"{i}/2"])
                                     for i in (1, 2)]]
    shard_wall = time.time() - t1
    merge = measure(timed(["compare", "--merge", str(work / "sharded"), "--quiet"]))
    same = json.loads((work / "in-process" / "compare.json").read_text()) == \
        json.loads((work / "sharded" / "compare.json").read_text())
    sharded_tasks = task_seconds(work / "sharded" / "summary.csv")
    print(f"\n{a.n} random-init {a.model} fine-tunes vs base (machine: {os.cpu_count()} CPU cores, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']})")
    print(f"{'run':<28}{'rc':>4}{'wall s':>10}{'peak GiB':>10}{'tasks':>7}{'s/task (mean)':>15}")
    print(f"{'in-process (1 process)':<28}{one['rc']:>4}{one['wall_s']:>10}{one['peak_gib']:>10}{len(per_task):>7}"
          f"{sum(per_task) / len(per_task):>15.1f}")
    for i, s in enumerate(shards, 1):
        print(f"{f'shard {i}/2':<28}{s['rc']:>4}{s['wall_s']:>10}{s['peak_gib']:>10}{'':>7}{'':>15}")
    print(f"{'2 shards together':<28}{'':>4}{shard_wall:>10.1f}{'':>10}{len(sharded_tasks):>7}"
          f"{sum(sharded_tasks) / len(sharded_tasks):>15.1f}")
    print(f"{'merge':<28}{merge['rc']:>4}{merge['wall_s']:>10}{merge['peak_gib']:>10}")
    print(f"speed-up of 2 shards over in-process: {one['wall_s'] / shard_wall:.2f}x; merged compare.json "
          f"{'==' if same else '!='} in-process compare.json")
    print("per-task seconds in-process: " + ", ".join(f"{x:.1f}" for x in per_task))
    for run in (one, *shards, merge):
        if run["rc"] not in (0,):
            print(run["stderr"])
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
