"""All-head VO decomposition of a random-init ViT-L-14: factored SVD vs dense torch.linalg.svd, same run.

    python benchmarks/bench_decompose.py [--model ViT-L-14] [--dense-heads 48 | --dense-heads all]

The dense reference materialises each D x D matrix and runs torch.linalg.svd (float64, like ours). It is slow
(~1 s per head at D = 1024 on 2 cores), so by default it is timed on a sample of heads and scaled to all heads;
the output says so. Ratios, not absolute times, are the figure to compare across machines.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import open_clip
import torch

from weightscope import decompose_model, describe_model
from weightscope.decompose import head_factors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-L-14")
    ap.add_argument("--dense-heads", default="48", help="number of heads timed densely, or 'all'")
    args = ap.parse_args()

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model(args.model, pretrained=None).eval()
    weights = describe_model(model)
    del model
    n_heads = weights.n_layers * weights.n_heads
    print(f"{args.model}: {weights.n_layers} layers x {weights.n_heads} heads, D = {weights.width}, "
          f"torch threads = {torch.get_num_threads()}")

    t0 = time.perf_counter()
    heads = decompose_model(weights, progress=False)
    t_factored = time.perf_counter() - t0

    pairs = list(heads)
    n_dense = n_heads if args.dense_heads == "all" else min(int(args.dense_heads), n_heads)
    sample = [pairs[i] for i in np.linspace(0, n_heads - 1, n_dense).round().astype(int)]
    t0 = time.perf_counter()
    worst = 0.0
    for layer, head in sample:
        A, B = head_factors(weights, layer, head)
        S = torch.linalg.svd(torch.from_numpy(A @ B)).S.numpy()[: weights.layers[0].attn.head_width]
        worst = max(worst, float(np.max(np.abs(heads[layer, head].s - S) / S)))
    t_dense = (time.perf_counter() - t0) * n_heads / n_dense

    scaled = "" if n_dense == n_heads else f" (timed on {n_dense} of {n_heads} heads, scaled)"
    print(f"factored SVD, all {n_heads} heads: {t_factored:8.2f} s")
    print(f"dense torch.linalg.svd, all heads: {t_dense:8.2f} s{scaled}")
    print(f"speed-up factored vs dense:        {t_dense / t_factored:8.1f}x   (goal >= 50x)")
    print(f"max relative singular-value difference on the timed heads: {worst:.2e}")


if __name__ == "__main__":
    main()
