"""Time explaining every MLP neuron of a random-init ViT-L-14 against one bare correlation GEMM of the same sizes.

Default: all 24 x 4,096 neurons' write vectors mapped to the joint space (E = 768) and explained with COMP (K = 5,
lam = 0.3, both signs, as ``weightscope.analyses.neurons.explain_neurons`` does) against 20,000 random unit concepts;
the reference is one product of the (N, E) joint-space signals with the (M, E) dictionary (chunked so the
N x M result never sits in memory at once; the flops are the same). Prints both times and their ratio.

    .venv/bin/python benchmarks/bench_neurons.py [--model ViT-L-14] [--atoms 20000] [--layers 24]
        [--neurons 4096] [--dtype float64]

Numba compile time is excluded (the solver is warmed up on a tiny problem first).
"""
from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
from weightscope.concepts.explainer import ConceptExplainer  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--model", default="ViT-L-14")
    ap.add_argument("--atoms", type=int, default=20000)
    ap.add_argument("--layers", type=int, default=None, help="first N layers only (default all)")
    ap.add_argument("--neurons", type=int, default=None, help="leading N neurons per layer (default all)")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--device", default=None, choices=["cpu", "cuda", "mps"],
                    help="also explain the same neuron vectors with the torch backend on this device")
    args = ap.parse_args(argv)

    import open_clip
    import torch

    from weightscope import describe_model
    from weightscope.analyses.neurons import explain_neurons, neuron_vectors
    from weightscope.decompose.joint import to_joint
    from weightscope.concepts.solvers import explain

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model(args.model, pretrained=None).eval()
    weights = describe_model(model)
    del model
    layers = list(range(weights.n_layers if args.layers is None else args.layers))
    F = weights.layers[0].mlp_out.shape[0]
    per_layer = F if args.neurons is None else min(args.neurons, F)
    n = len(layers) * per_layer
    rng = np.random.default_rng(0)
    D = rng.standard_normal((args.atoms, weights.embed_dim)).astype(args.dtype)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    concepts = [f"c{i}" for i in range(args.atoms)]
    explain(rng.standard_normal((8, weights.embed_dim)), D[:64], k=3)  # numba warm-up

    t0 = time.perf_counter()
    explain_neurons(weights, D, ConceptExplainer(concepts, k=args.k), layers=layers, n_neurons=args.neurons, sides=("write",))
    t_explain = time.perf_counter() - t0

    X = np.vstack([to_joint(weights, neuron_vectors(weights, l)[0][:per_layer]) for l in layers]).astype(args.dtype)
    t0 = time.perf_counter()
    for c in range(0, n, 4096):
        X[c:c + 4096] @ D.T
    t_gemm = time.perf_counter() - t0

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.model}: {len(layers)} layers x "
          f"{per_layer} neurons = {n} neurons (x2 signs), {args.atoms} concepts x E={weights.embed_dim}, "
          f"COMP k={args.k}, {args.dtype}")
    print(f"explain all neurons: {t_explain:.1f} s   one correlation GEMM ({n} x {weights.embed_dim} x {args.atoms}): "
          f"{t_gemm:.1f} s   ratio {t_explain / t_gemm:.1f}x")
    if args.device:
        from weightscope.core.compute import Compute

        compute = Compute(device=args.device, backend="torch")
        dev = compute.torch_device()
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
        explain(X[:64], D, k=args.k, backend=compute, progress=False)  # warm-up
        ref = explain(X, D, k=args.k, both_signs=True, progress=False)
        sync()
        t0 = time.perf_counter()
        ex = explain(X, D, k=args.k, both_signs=True, progress=False, backend=compute)
        sync()
        t_dev = time.perf_counter() - t0
        same = (ex.indices == ref.indices).all(1)
        print(f"device path ({name}, torch backend): the same COMP on the {n} neuron vectors (x2 signs): {t_dev:.2f} s; "
              f"same supports as Numba {same.mean():.2%}, max |coef diff| "
              f"{np.abs(ex.coefficients - ref.coefficients)[same].max():.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
