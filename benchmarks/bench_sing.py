#!/usr/bin/env python
"""SING speed: null-space analysis of a 1000-class x 768 head plus the visibility of a 20,000-concept vocabulary,
against one embedding-matrix GEMM of the same sizes (the 20,000 x 768 concepts times the 768 x 1,000 head).

    python benchmarks/bench_sing.py [--classes 1000] [--width 768] [--concepts 20000] [--repeat 3] [--threads N]

Ours, timed end to end: ``head_geometry`` (one full SVD of W, rank with the relative tolerance, row and null bases)
and ``concept_visibility`` (the dictionary normalisation: unit rows, minus the mean, unit rows; one GEMM with the
row basis; energies and gains). Two heads: a generic one (Gaussian, full rank 768: the null space is empty, as for
any head with more classes than features) and one whose 1,000 rows span 512 dimensions (null space 256-d).
Reference: ``concepts @ W.T`` in float64 (the precision ours computes in) and in float32. Best of --repeat runs.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from weightscope.models.linear_heads import head_from_arrays  # noqa: E402
from weightscope.analyses.sing import concept_visibility, head_geometry  # noqa: E402


def best_of(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--concepts", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads for both sides (default: the library's)")
    args = ap.parse_args(argv)
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    rng = np.random.default_rng(0)
    C, F, M = args.classes, args.width, args.concepts
    # CLIP-like anisotropy: every concept shares a common direction (mean pairwise cosine ~0.5)
    concepts = rng.standard_normal((M, F)) + rng.standard_normal(F)
    names = [f"c{i}" for i in range(M)]
    heads = {"full rank": rng.standard_normal((C, F)),
             "rank 512": rng.standard_normal((C, 512)) @ rng.standard_normal((512, F))}
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, BLAS threads {args.threads or 'default'}, "
          f"numpy {np.__version__}; "
          f"head {C} x {F}, vocabulary {M} concepts; best of {args.repeat}")
    for label, W in heads.items():
        head = head_from_arrays(W)

        def ours():
            geom = head_geometry(head)
            return geom, concept_visibility(geom, concepts, names)

        t_ours, (geom, vis) = best_of(ours, args.repeat)
        t_geom, _ = best_of(lambda: head_geometry(head), args.repeat)
        t_gemm64, _ = best_of(lambda: concepts @ W.T, args.repeat)
        c32, w32 = concepts.astype(np.float32), W.astype(np.float32)
        t_gemm32, _ = best_of(lambda: c32 @ w32.T, args.repeat)
        print(f"\n{label}: rank {geom.rank}, null space {geom.null_dim}-d, mean visibility {vis.visibility.mean():.3f}")
        print(f"  ours (SVD + bases {t_geom * 1e3:.0f} ms, + visibility of {M} concepts): {t_ours * 1e3:.0f} ms")
        print(f"  one GEMM {M} x {F} x {C}: float64 {t_gemm64 * 1e3:.0f} ms, float32 {t_gemm32 * 1e3:.0f} ms")
        print(f"  ratio ours / GEMM: {t_ours / t_gemm64:.2f} (float64), {t_ours / t_gemm32:.2f} (float32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
