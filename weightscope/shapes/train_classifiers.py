"""Train the shapes-world shape classifiers (``cnn``, ``vit``) from a seed; writes classifier files.

    python -m weightscope.shapes.train_classifiers --arch cnn --out shapes-classifier-cnn.safetensors
    python -m weightscope.shapes.train_classifiers --arch vit --out my-vit.safetensors --steps 800 --seed 3
    python -m weightscope.shapes.train_classifiers --reproduce DIR   # both shipped classifiers into DIR

Data are generated on the fly: step i trains on ``world.single_objects(batch_size, seed=(seed, i),
spurious_strength=None)`` (one object per image; shape, colour, size, position and background uniform and
independent), so a run is a pure function of its arguments on one torch build and thread count (the thread
count changes the order of floating-point reductions, hence the last bits). Labels: the shape index.
Loss: cross-entropy; AdamW, linear warm-up then cosine decay. Held-out evaluation: ``HELDOUT_N`` images
from seed ``HELDOUT_SEED`` (an int seed: disjoint from the training stream's (seed, i) pairs).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from weightscope.core.errors import WeightscopeError
from weightscope.shapes import world
from weightscope.shapes.classifiers import ARCHS, build_classifier, bundled_path, default_config, save_classifier
from weightscope.shapes.evaluate import images_to_tensor

HELDOUT_SEED = 20_000
HELDOUT_N = 2000

# The recipes of the shipped classifiers (keyword arguments of ``train``).
RECIPES = {
    "cnn": dict(seed=0, steps=400, batch_size=128, lr=3e-3, warmup=20, weight_decay=5e-4, threads=1),
    "vit": dict(seed=0, steps=1600, batch_size=128, lr=2e-3, warmup=50, weight_decay=0.05, threads=1),
}


def heldout_accuracy(module, config: dict, n: int = HELDOUT_N, seed: int = HELDOUT_SEED,
                     batch_size: int = 500) -> float:
    """Shape accuracy of ``module`` (eval mode) on n held-out one-object images (uniform attributes)."""
    import torch

    images, scenes = world.single_objects(n, seed, spurious_strength=None)
    labels = torch.as_tensor(scenes.shape[:, 0])
    correct = 0
    module.eval()
    with torch.no_grad():
        for s in range(0, n, batch_size):
            x = images_to_tensor(images[s:s + batch_size], config["mean"], config["std"])
            correct += int((module(x).argmax(1) == labels[s:s + batch_size]).sum())
    return correct / n


def train(arch: str, out, *, seed: int = 0, steps: int = 400, batch_size: int = 128, lr: float = 3e-3,
          warmup: int = 20, weight_decay: float = 5e-4, threads: int = 1, options: dict | None = None,
          heldout_n: int = HELDOUT_N, quiet: bool = False) -> dict:
    """Train a fresh ``arch`` classifier for ``steps`` steps, save it to ``out`` (see ``save_classifier``);
    returns the run's record (also stored as the config's "training" entry): hyper-parameters, wall and
    CPU seconds of the training loop, held-out accuracy. options: architecture settings over
    ``default_config(arch)`` (e.g. {"patch": 4}). heldout_n: images of the held-out evaluation."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from weightscope.core.fileio import check_writable, refuse_inputs

    if arch not in ARCHS:
        raise WeightscopeError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if steps <= 0 or batch_size < 2 or threads < 1:
        raise WeightscopeError(f"need steps > 0, batch_size >= 2, threads >= 1; got {steps}, {batch_size}, {threads}")
    out = check_writable(out)
    refuse_inputs([out, out.with_suffix(".json")], ())  # e.g. the shipped files: refused now, not after training
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    options = dict(options or {})
    config = default_config(arch, **options)
    model = build_classifier(config)
    model.train()
    # decay conv and linear weights only: not gains, biases, the class token or positional embeddings
    decay = [p for n, p in model.named_parameters() if n.endswith(".weight") and p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if not (n.endswith(".weight") and p.ndim >= 2)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=lr)

    def lr_at(i):
        if i < warmup:
            return lr * (i + 1) / warmup
        return 0.5 * lr * (1 + math.cos(math.pi * (i - warmup) / max(1, steps - warmup)))

    wall0, cpu0 = time.perf_counter(), time.process_time()
    running = None
    bar = tqdm(range(steps), desc=f"train shapes-{arch}", mininterval=2.0, disable=quiet)
    for i in bar:
        images, scenes = world.single_objects(batch_size, seed=(seed, i), spurious_strength=None)
        x = images_to_tensor(images, config["mean"], config["std"])
        y = torch.as_tensor(scenes.shape[:, 0])
        for g in opt.param_groups:
            g["lr"] = lr_at(i)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        bar.set_postfix(loss=f"{running:.3f}", refresh=False)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    model.eval()
    acc = heldout_accuracy(model, config, n=heldout_n)
    record = {"arch": arch, "seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup,
              "weight_decay": weight_decay, "threads": threads, "options": options, "torch": torch.__version__,
              "train_wall_seconds": round(wall, 1), "train_cpu_seconds": round(cpu, 1),
              "final_loss": round(running, 4), "heldout_accuracy": acc,
              "heldout": {"n": heldout_n, "seed": HELDOUT_SEED, "spurious_strength": None},
              "parameters": sum(p.numel() for p in model.parameters())}
    config["training"] = record
    save_classifier(model, config, out)
    return record


def reproduce(out_dir) -> dict:
    """Re-run the recipes of the shipped classifiers into out_dir; returns {arch: path}."""
    out_dir = Path(out_dir)
    paths = {}
    for arch, recipe in RECIPES.items():
        paths[arch] = out_dir / bundled_path(arch).name
        train(arch, paths[arch], **recipe)
    return paths


def _parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m weightscope.shapes.train_classifiers", allow_abbrev=False,
                                description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=ARCHS, help="classifier architecture")
    p.add_argument("--out", help="output .safetensors path (the config goes beside it as .json)")
    p.add_argument("--reproduce", metavar="DIR", help="re-run the recipes of both shipped classifiers into DIR")
    p.add_argument("--seed", type=int, default=None, help="default: the shipped recipe's")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1, as shipped)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = _parse(argv)
    if a.reproduce:
        print(json.dumps({k: str(v) for k, v in reproduce(a.reproduce).items()}))
        return 0
    if not a.arch or not a.out:
        print("error: give --arch cnn|vit and --out PATH (or --reproduce DIR)", file=sys.stderr)
        return 2
    given = {"seed": a.seed, "steps": a.steps, "batch_size": a.batch_size, "lr": a.lr, "warmup": a.warmup,
             "weight_decay": a.weight_decay, "threads": a.threads}
    recipe = {**RECIPES[a.arch], **{k: v for k, v in given.items() if v is not None}}
    try:
        record = train(a.arch, a.out, quiet=a.quiet, **recipe)
    except WeightscopeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
