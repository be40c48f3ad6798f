#!/usr/bin/env python
"""SING on real trained classifiers: the four CIFAR-10 ResNets of ../shared on the 10,000 real test images.

    python benchmarks/sing_cifar.py [--per-class N] [--no-cache]

For each ResNet-20/32/44/56: the head's rank and null-space dimension (weightscope.analyses.sing.head_geometry); the share
of penultimate feature energy in the null space, per true class and overall (sum of |Pi_n phi|^2 over sum of
|phi|^2), and of the centred features (phi minus the mean feature: the share of the variance); the equivalence on
real data (each image's null component replaced by a random other image's: predictions kept, largest relative
logit change, through the network's own nn.Linear); and how much class information the null components still
carry (a logistic regression trained on the null components of half the images, tested on the other half,
against one on the full features).

Penultimate features are cached under $WEIGHTSCOPE_CACHE_DIR (or the per-user cache) as
cifar-features/resnet<depth>-<key>.npy, keyed by the weights file and a checksum of the image tensor.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import cifar_resnets as cr  # noqa: E402

from weightscope.concepts.embed import default_cache_dir  # noqa: E402
from weightscope.core.fileio import write_atomic  # noqa: E402
from weightscope.models.linear_heads import linear_head  # noqa: E402
from weightscope.analyses.sing import head_geometry  # noqa: E402


def cached_features(depth: int, net, images, n: int, use_cache: bool) -> np.ndarray:
    path = cr.weights_path(depth)
    pixels = zlib.crc32(images.numpy().tobytes())          # the exact image tensor, not just how many
    key = hashlib.sha256(f"{path.name}|{path.stat().st_size}|{n}|{pixels}|v1".encode()).hexdigest()[:24]
    cache = default_cache_dir() / "cifar-features" / f"resnet{depth}-{key}.npy"
    if use_cache and cache.is_file():
        try:
            feats = np.load(cache)
            if feats.shape == (n, 64):
                return feats
        except (OSError, ValueError):
            pass                                   # damaged: recompute below
    feats = cr.penultimate_features(net, images)
    if use_cache:
        buf = io.BytesIO()
        np.save(buf, feats)
        write_atomic(cache, buf.getvalue())
    return feats


def null_probe(null_feats, full_feats, labels, seed=0) -> tuple[float, float]:
    """Test accuracy of logistic regressions on the null components and on the full features (half / half split)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    order = np.random.default_rng(seed).permutation(len(labels))
    train, test = order[: len(order) // 2], order[len(order) // 2:]
    out = []
    for X in (null_feats, full_feats):
        scaler = StandardScaler().fit(X[train])
        clf = LogisticRegression(max_iter=2000).fit(scaler.transform(X[train]), labels[train])
        out.append(float(clf.score(scaler.transform(X[test]), labels[test])))
    return out[0], out[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=None, help="first N images of each class (default all 1,000)")
    ap.add_argument("--no-cache", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    t0 = time.perf_counter()
    images, labels = cr.load_cifar_test(per_class=args.per_class)
    print(f"{len(labels)} CIFAR-10 test images loaded in {time.perf_counter() - t0:.1f} s")
    rows, class_rows = [], []
    for depth in cr.DEPTHS:
        net = cr.load_resnet(depth)
        t0 = time.perf_counter()
        feats = cached_features(depth, net, images, len(labels), not args.no_cache)
        t_feat = time.perf_counter() - t0
        head = linear_head(net, cr.CLASSES)
        geom = head_geometry(head)
        row, null = geom.split(feats)
        energy = (null ** 2).sum(1)
        total = (feats ** 2).sum(1)
        centred = feats - feats.mean(0)
        c_null = geom.split(centred)[1]
        per_class = [energy[labels == c].sum() / total[labels == c].sum() for c in range(10)]
        swapped = row + null[np.random.default_rng(depth).permutation(len(labels))]
        with torch.no_grad():
            lin = net.linear.double()
            a = lin(torch.from_numpy(feats)).numpy()
            b = lin(torch.from_numpy(swapped)).numpy()
        kept = float((a.argmax(1) == b.argmax(1)).mean())
        rel = float(np.max(np.abs(a - b)) / np.max(np.abs(a)))
        acc = float((a.argmax(1) == labels).mean())
        probe_null, probe_full = null_probe(null, feats, labels)
        rows.append((depth, geom.rank, geom.null_dim, acc, energy.sum() / total.sum(),
                     (c_null ** 2).sum() / (centred ** 2).sum(), kept, rel, probe_null, probe_full, t_feat))
        class_rows.append((depth, per_class))

    print("\n| model | rank | null dim | top-1 | null energy | null share of variance | predictions kept after "
          "null swap | max rel. logit change | probe acc. on null part | probe acc. on full features |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for d, r, nd, acc, e, ec, kept, rel, pn, pf, _ in rows:
        print(f"| ResNet-{d} | {r} | {nd} | {acc:.1%} | {e:.1%} | {ec:.1%} | {kept:.2%} | {rel:.1e} | {pn:.1%} | {pf:.1%} |")
    print("\nShare of penultimate feature energy in the null space, per true class:\n")
    print("| model | " + " | ".join(cr.CLASSES) + " |")
    print("|---|" + "---|" * 10)
    for d, per in class_rows:
        print(f"| ResNet-{d} | " + " | ".join(f"{x:.1%}" for x in per) + " |")
    print("\nfeature extraction (s, 0 when cached): " + ", ".join(f"ResNet-{r[0]} {r[-1]:.1f}" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
