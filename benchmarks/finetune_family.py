"""A family of fine-tunes of the bundled shapes-world base, and the comparison harness run over them.

    python benchmarks/finetune_family.py --out benchmarks/results/family            # train, then compare
    python benchmarks/finetune_family.py --out DIR --steps 40 --batch-size 64       # shorter runs (default 150 x 128)
    python benchmarks/finetune_family.py --out DIR --compare-only                   # reuse trained checkpoints

Each member starts from the bundled base and is trained briefly (same loss and optimiser as the shipped tuned
model, ``weightscope.shapes.train.train``) on one shifted world:

  control      the base's own world, a new seed (how much does fine-tuning move the heads by itself?)
  decorrelated backgrounds independent of shape family (the spurious cue removed; the shipped tuned model's shift)
  no-red       red objects never appear (drawn in another colour; captions say that colour)
  mirrored     images mirrored left-right, captions unchanged ("left" now names objects on the right)

The shift is applied by wrapping ``world.sample_scenes`` for the duration of one run (every training batch is drawn
through it), so the training code is the shipped one. Then ``weightscope.harness.run_harness`` compares the base
with every member (one task per checkpoint) and writes the summary table and report under OUT/compare.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from weightscope.shapes import bundled, world  # noqa: E402


def _no_red(scenes):
    # orange never clashes with a background (blue, green, gray, black), so the object stays visible
    colour = np.where(scenes.colour == world.COLOUR_NAMES.index("red"), world.COLOUR_NAMES.index("orange"),
                      scenes.colour)
    return world.Scenes(**{**scenes.__dict__, "colour": colour})


def _mirrored(scenes):
    centre = scenes.centre.copy()
    centre[..., 0] = scenes.image_size - centre[..., 0]
    return world.Scenes(**{**scenes.__dict__, "centre": centre})


SHIFTS = {
    "control": (None, {"spurious_strength": 0.9}),
    "decorrelated": (None, {"spurious_strength": None}),
    "no-red": (_no_red, {"spurious_strength": 0.9}),
    "mirrored": (_mirrored, {"spurious_strength": 0.9}),
}


@contextlib.contextmanager
def shifted_world(transform):
    """Every scene drawn inside the block goes through ``transform`` (None: unchanged)."""
    original = world.sample_scenes
    if transform is not None:
        world.sample_scenes = lambda *a, **k: transform(original(*a, **k))
    try:
        yield
    finally:
        world.sample_scenes = original


def train_family(out: Path, names, steps: int, batch_size: int, lr: float) -> dict[str, Path]:
    from weightscope.shapes.train import train

    base = bundled.checkpoint_path("base")
    paths = {}
    for name in names:
        path = out / f"ft-{name}.safetensors"
        paths[name] = path
        if path.is_file():
            print(f"{name}: {path} exists, not retrained")
            continue
        transform, kw = SHIFTS[name]
        t0 = time.time()
        with shifted_world(transform):
            meta = train(path, init=base, seed=10 + list(SHIFTS).index(name), steps=steps, batch_size=batch_size,
                         lr=lr, warmup=max(1, steps // 10), save_every=steps, log_every=max(1, steps // 4),
                         contrast={"position": 0.5, "shape": 0.5}, **kw)
        print(f"{name}: {steps} steps in {time.time() - t0:.0f} s, final loss {meta['final_loss']}", flush=True)
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--out", default="benchmarks/results/family")
    p.add_argument("--shifts", default=",".join(SHIFTS), help=f"comma list of {', '.join(SHIFTS)}")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--compare-only", action="store_true", help="reuse the checkpoints already in OUT")
    p.add_argument("--train-only", action="store_true", help="train the family, compare later")
    p.add_argument("--workers", type=int, default=None, help="dask workers (default: in-process)")
    a = p.parse_args(argv)
    names = [s.strip() for s in a.shifts.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SHIFTS))
    if unknown:
        p.error(f"unknown shift(s) {unknown}; choose from {sorted(SHIFTS)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(1)
    if a.compare_only:
        paths = {n: out / f"ft-{n}.safetensors" for n in names}
    else:
        paths = train_family(out, names, a.steps, a.batch_size, a.lr)
    if a.train_only:
        return 0

    from weightscope.harness import run_harness

    specs = [(name, str(path)) for name, path in paths.items()]
    summary = run_harness("bundled", specs, out / "compare", workers=a.workers, in_process=a.workers is None)
    print(summary.table())
    print(json.dumps({"steps": a.steps, "batch_size": a.batch_size, "lr": a.lr}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
