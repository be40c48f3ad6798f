"""A constructed family of shapes-world fine-tunes with a known tree, to check lineage recovery (MoTHer).

    python benchmarks/shapes_family_tree.py --out benchmarks/results/family-tree              # train (a few min)
    python benchmarks/shapes_family_tree.py --out DIR --steps 40                            # shorter runs

The tree (each child fine-tuned from its parent with the shipped training code, ``shapes.train.train``):

    base (the bundled base) -> A (red objects never shown)   -> A1 (images mirrored)
                                                             -> A2 (backgrounds decorrelated from shape)
                            -> B (the base's own world, a new seed)

Seeded: the same command gives the same checkpoints. The checkpoints go to OUT (keep them out of git); the true
tree is written to OUT/tree.json ({child: parent}), and ``weightscope.analyses.zoo.lineage`` is then run on the
five checkpoints and its edges compared with the truth (OUT/lineage.json).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from weightscope.core.fileio import write_atomic  # noqa: E402
from weightscope.shapes import bundled  # noqa: E402

_spec = importlib.util.spec_from_file_location("finetune_family", Path(__file__).with_name("finetune_family.py"))
family = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(family)

# child: (parent, shift of finetune_family.SHIFTS, seed)
TREE = {"A": ("base", "no-red", 21), "A1": ("A", "mirrored", 22), "A2": ("A", "decorrelated", 23),
        "B": ("base", "control", 24)}


def train_tree(out: Path, steps: int, batch_size: int, lr: float) -> dict[str, Path]:
    from weightscope.shapes.train import train

    paths = {"base": bundled.checkpoint_path("base")}   # trained from this file; compared as spec "bundled"
    for child, (parent, shift, seed) in TREE.items():   # parents come first in TREE
        path = out / f"{child}.safetensors"
        paths[child] = path
        if path.is_file():
            print(f"{child}: {path} exists, not retrained")
            continue
        transform, kw = family.SHIFTS[shift]
        t0 = time.time()
        with family.shifted_world(transform):
            meta = train(path, init=paths[parent], seed=seed, steps=steps, batch_size=batch_size, lr=lr,
                         warmup=max(1, steps // 10), save_every=steps, log_every=max(1, steps // 2),
                         contrast={"position": 0.5, "shape": 0.5}, **kw)
        print(f"{child} <- {parent} ({shift}): {steps} steps in {time.time() - t0:.0f} s, "
              f"final loss {meta['final_loss']}", flush=True)
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--out", default="benchmarks/results/family-tree")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(1)
    paths = train_tree(out, a.steps, a.batch_size, a.lr)
    truth = {child: parent for child, (parent, _, _) in TREE.items()}
    write_atomic(out / "tree.json", json.dumps({"parent": truth, "steps": a.steps, "batch_size": a.batch_size,
                                                "lr": a.lr}, indent=1))
    from weightscope.analyses.zoo.lineage import lineage_of_checkpoints

    t0 = time.time()
    members = [("base", "bundled")] + [(name, str(path)) for name, path in paths.items() if name != "base"]
    from weightscope.bundled import spec_loading

    tree = lineage_of_checkpoints(members, loading=spec_loading(), progress=False)
    found = tree.parent
    right = sorted(c for c in truth if found.get(c) == truth[c])
    undirected = sorted(c for c in truth if found.get(c) == truth[c] or found.get(truth[c]) == c)
    print(f"lineage in {time.time() - t0:.1f} s; root {tree.root} (true: base)")
    print(tree.summary())
    print(f"edges right with direction: {len(right)}/{len(truth)} {right}; right up to direction: "
          f"{len(undirected)}/{len(truth)}")
    write_atomic(out / "lineage.json", json.dumps({"truth": truth, "found": found, "root": tree.root,
                                                   "directed_right": right, "undirected_right": undirected,
                                                   **tree.to_dict()}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
