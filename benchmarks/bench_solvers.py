"""Time the sparse solvers against one bare correlation GEMM and against scikit-learn's orthogonal_mp.

Default problem: 9,216 signals (ViT-B/16: 12 layers x 12 heads x 64 singular directions) against a
30,000 x 512 dictionary, K = 5, lam = 0.3, float32 dictionary products (re-fits are float64).

    .venv/bin/python benchmarks/bench_solvers.py [--signals 9216] [--atoms 30000] [--width 512]
        [--k 5] [--dtype float32] [--signal-kind planted|shared|random] [--sklearn-signals 96]
        [--repeat 2]

Signal kinds: "planted" = non-negative combinations of K atoms drawn uniformly, plus noise at 30 dB SNR
(what a clean concept explanation looks like); "shared" = the same but atoms drawn with Zipf(1)
popularity, so signals share concepts (as real explanations do: a few concepts recur across heads);
"random" = isotropic Gaussian directions (nothing to find).
The Gram trick pays once per distinct atom, so shared concepts make later steps cheaper; with uniformly
drawn atoms nearly every step needs a fresh product per signal (about K products in all).
Numba compile time is excluded: every kernel is warmed up on a tiny problem first. scikit-learn runs
on a subsample (it solves one signal at a time, far too slow for all of them) and its time is scaled
linearly to the full signal count.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def make_problem(n, m, e, k, kind, dtype, seed=0):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((m, e)).astype(dtype)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    if kind == "random":
        X = rng.standard_normal((n, e))
    else:
        if kind == "shared":
            # Zipf(1) popularity over a random order of the atoms: a few concepts explain many signals.
            p = 1.0 / np.arange(1, m + 1)
            p = p[rng.permutation(m)] / p.sum()
        else:
            p = None
        support = np.stack([rng.choice(m, k, replace=False, p=p) for _ in range(n)])
        coef = rng.uniform(0.5, 1.5, (n, k))
        X = np.einsum("bk,bke->be", coef, D[support].astype(np.float64))
        noise = rng.standard_normal((n, e))
        noise *= np.linalg.norm(X, axis=1, keepdims=True) / np.linalg.norm(noise, axis=1, keepdims=True)
        X += noise * 10 ** (-30 / 20)
    return X, D


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--signals", type=int, default=9216)
    ap.add_argument("--atoms", type=int, default=30000)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--lam", type=float, default=0.3)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--signal-kind", choices=["planted", "shared", "random"], default="planted")
    ap.add_argument("--sklearn-signals", type=int, default=96)
    ap.add_argument("--repeat", type=int, default=2, help="runs per solver (best time counts)")
    ap.add_argument("--device", default=None, choices=["cpu", "cuda", "mps"],
                    help="also time the torch backend on this device against one bare GEMM there, and compare its "
                         "supports and coefficients with the Numba results")
    args = ap.parse_args()

    t_import, _ = timed(__import__, "weightscope.concepts.solvers")
    from sklearn.linear_model import orthogonal_mp

    from weightscope.concepts.solvers import explain

    dtype = np.dtype(args.dtype)
    N, M, E, K = args.signals, args.atoms, args.width, args.k
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; numpy {np.__version__}")
    print(f"problem: {N} signals ({args.signal_kind}) x dictionary {M} x {E} ({dtype}), K={K}, lam={args.lam}")

    # Warm-up: compile (or load from the Numba cache) every kernel for this dtype, outside the timings.
    Xw, Dw = make_problem(8, 64, 16, 3, "random", dtype, seed=1)
    t0 = time.perf_counter()
    for method in ("comp", "nnomp", "omp", "mp", "topk"):
        explain(Xw, Dw, method=method, k=3)
    print(f"warm-up (Numba compile/cache load, excluded from timings): {time.perf_counter() - t0:.2f} s "
          f"(+ {t_import:.2f} s import)")

    X, D = make_problem(N, M, E, K, args.signal_kind, dtype)

    # The machine may be shared with other work: the bare GEMM is timed again after every solver
    # run, each solver runs --repeat times, and ratios compare best times (wall clock and CPU time),
    # the usual way to see through interference.
    Xg = X.astype(dtype)
    gemm_wall, gemm_cpu = [], []

    def run_gemm():
        w0, c0 = time.perf_counter(), time.process_time()
        S = np.matmul(Xg, D.T)
        gemm_wall.append(time.perf_counter() - w0)
        gemm_cpu.append(time.process_time() - c0)
        del S

    run_gemm()
    print(f"bare GEMM X D^T ({N} x {E}) @ ({E} x {M}) {dtype}: {gemm_wall[-1]:.3f} s wall, "
          f"{gemm_cpu[-1]:.3f} s CPU")
    times, cpu, results = {}, {}, {}
    for method in ("comp", "nnomp", "omp"):
        for _ in range(args.repeat):
            c0 = time.process_time()
            t, results[method] = timed(explain, X, D, method=method, k=K, lam=args.lam, progress=False)
            c = time.process_time() - c0
            times[method] = min(times.get(method, np.inf), t)
            cpu[method] = min(cpu.get(method, np.inf), c)
            print(f"{method:>6}: {t:8.3f} s wall, {c:6.2f} s CPU "
                  f"(median fidelity {np.median(results[method].fidelity):.3f})")
            run_gemm()
            print(f"  GEMM: {gemm_wall[-1]:.3f} s wall, {gemm_cpu[-1]:.3f} s CPU")
    t_gemm, c_gemm = min(gemm_wall), min(gemm_cpu)
    ratio = {m: times[m] / t_gemm for m in times}
    cpu_ratio = {m: cpu[m] / c_gemm for m in cpu}

    # scikit-learn on a subsample of the same OMP problem (same unit signals and atoms).
    n_sk = min(args.sklearn_signals, N)
    Xu = X[:n_sk] / np.linalg.norm(X[:n_sk], axis=1, keepdims=True)
    # Same precision as ours (sklearn runs float32 input in float32, about twice as fast as float64).
    Dsk = np.asfortranarray(D.T)  # (E, M): atoms in columns, as sklearn wants
    t_sk, coef_sk = timed(orthogonal_mp, Dsk, Xu.T.astype(dtype), n_nonzero_coefs=K)
    t_sk_full = t_sk * N / n_sk
    ours = results["omp"]
    same = np.mean([set(ours.indices[i]) == set(np.flatnonzero(coef_sk[:, i])) for i in range(n_sk)])
    dc = max(np.abs(ours.coefficients[i] - coef_sk[ours.indices[i], i]).max() for i in range(n_sk))
    print(f"sklearn orthogonal_mp ({dtype}): {t_sk:.3f} s for {n_sk} signals -> {t_sk_full:.1f} s scaled to {N}")
    print(f"  same supports as ours on the subsample: {same:.1%}; max |coef difference| {dc:.2e}")

    print(f"summary: best of {args.repeat} runs / best GEMM ({t_gemm:.3f} s wall, {c_gemm:.3f} s CPU); "
          "CPU-time ratios in brackets")
    print(f"  COMP / GEMM    = {ratio['comp']:6.2f}  [{cpu_ratio['comp']:5.2f}]   (goal <= 3)")
    print(f"  NN-OMP / GEMM  = {ratio['nnomp']:6.2f}  [{cpu_ratio['nnomp']:5.2f}]")
    print(f"  OMP / GEMM     = {ratio['omp']:6.2f}  [{cpu_ratio['omp']:5.2f}]")
    print(f"  sklearn / OMP  = {t_sk_full / times['omp']:6.1f}   (goal >= 10)")
    print("  (Numba compile time excluded; sklearn time scaled linearly from the subsample)")
    if args.device:
        device_path(args.device, X, D, K, args.lam, results, args.repeat)


def device_path(device, X, D, K, lam, cpu_results, repeat):
    """The torch backend on ``device``: each method's time / one bare GEMM of the same size there, and agreement
    with the Numba results (same supports; max |coefficient difference|)."""
    import torch

    from weightscope.concepts.solvers import explain
    from weightscope.core.compute import Compute

    compute = Compute(device=device, backend="torch")
    dev = compute.torch_device()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    Xt = torch.as_tensor(X, dtype=torch.float32, device=dev)
    Dt = torch.as_tensor(D, dtype=torch.float32, device=dev)
    gemm = []
    for _ in range(3):
        sync()
        t0 = time.perf_counter()
        (Xt @ Dt.T).max()
        sync()
        gemm.append(time.perf_counter() - t0)
    t_gemm = min(gemm)
    print(f"device path: {name}; bare GEMM {X.shape[0]} x {D.shape[1]} x {D.shape[0]} fp32: {t_gemm * 1e3:.1f} ms")
    explain(X[:64], D, method="comp", k=K, backend=compute, progress=False)  # warm-up (kernels, allocator)
    for method in ("comp", "nnomp", "omp"):
        best, ex = np.inf, None
        for _ in range(repeat):
            sync()
            t, ex = timed(explain, X, D, method=method, k=K, lam=lam, progress=False, backend=compute)
            best = min(best, t)
        ref = cpu_results[method]
        same = np.mean((ex.indices == ref.indices).all(1))
        dc = np.abs(ex.coefficients - ref.coefficients)[(ex.indices == ref.indices).all(1)].max()
        print(f"  {method:>6} torch/{dev.type}: {best:.3f} s = {best / t_gemm:.2f} x GEMM (goal for COMP <= 2 on a GPU); "
              f"same supports as Numba: {same:.2%}, max |coef diff| {dc:.1e}")


if __name__ == "__main__":
    main()
