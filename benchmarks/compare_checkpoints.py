"""Fine-tuning benchmark harness: how did fine-tuning change a CLIP vision tower's attention heads?

    python benchmarks/compare_checkpoints.py bundled bundled:tuned --label --out benchmarks/results/compare-shapes
    python benchmarks/compare_checkpoints.py ViT-B-32:openai ft-a.safetensors ft-b.pt --out out/   # paths: base's arch
    python benchmarks/compare_checkpoints.py ViT-B-32 --synthetic --out out/                        # no checkpoints needed

For every tuned checkpoint (specs as in ``weightscope compare --help``; one tuned model in memory at a time) it
reports the in-basis / off-basis shares of the heads' change energy, direction counts, the most changed
heads and, with --label, the most amplified and suppressed concepts. Writes table.md, compare.json, report.html and
one PNG per figure under --out, and prints the table.

--synthetic adds a tuned checkpoint built from the base with known changes (three directions rescaled, one
rotated by 60 degrees) and checks that exactly those are reported. --timing compares the factored per-head
comparison with a dense reference (D x D matrices, full SVDs, the same energy split) on a few heads: time ratio and
largest energy difference.
"""
from __future__ import annotations

import argparse
import copy
import gc
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from weightscope.concepts.explainer import ConceptExplainer
from weightscope import WeightscopeError, decompose_head, describe_model
from weightscope.models.adapters import write_attention
from weightscope.analyses.compare import architecture_of, compare_heads, load_checkpoint
from weightscope.core.fileio import write_atomic
from weightscope.analyses.harness import run_harness
from weightscope.analyses.compare.results import text_table
from weightscope.reports.compare import comparison_rows, write_report
from weightscope.decompose import head_factors


def synthetic_checkpoint(base_spec: str, model: str | None, folder: Path, seed: int = 0):
    """Save a tuned copy of the base with known changes.

    Returns (base spec, architecture, tuned path, {"reweighted": {(l, h, i): alpha}, "rotated": [(l, h, i)]}); a
    randomly initialised base is saved too (its spec is replaced by the file) so both runs see the same weights.
    """
    from safetensors.torch import save_file

    loaded = load_checkpoint(base_spec, model)
    arch = model or architecture_of(loaded)
    if loaded.source == "random-init":
        base_spec = str(folder / "synthetic-base.safetensors")
        save_file({k: v.detach().contiguous() for k, v in loaded.model.state_dict().items()}, base_spec)
    weights = describe_model(loaded)
    rng = np.random.default_rng(seed)
    L, H = weights.n_layers, weights.n_heads
    heads = [(int(l), int(h)) for l, h in zip(rng.permutation(L)[:3], rng.integers(0, H, size=3))]
    (l1, h1), (l2, h2), (l3, h3) = heads if len({l for l, _ in heads}) == 3 else [(0, 0), (L // 2, H // 2), (L - 1, H - 1)]
    truth = {"reweighted": {(l1, h1, 0): 1.5, (l1, h1, 3): 0.5, (l2, h2, 1): 2.0}, "rotated": [(l3, h3, 0)]}
    tuned = copy.deepcopy(loaded.model)
    for layer in sorted({l1, l2, l3}):
        attn = copy.deepcopy(weights.layers[layer].attn)
        for h in sorted({h for l, h, _ in truth["reweighted"] if l == layer}):
            svd = decompose_head(weights, layer, h)
            s = svd.s.copy()
            for (l, hh, i), alpha in truth["reweighted"].items():
                if (l, hh) == (layer, h):
                    s[i] *= alpha
            attn.read_v[h], attn.write_o[h] = svd.read.T * s, svd.write
        if layer == l3:
            svd = decompose_head(weights, l3, h3)
            w = rng.normal(size=svd.write.shape[1])
            w -= svd.write.T @ (svd.write @ w)
            write = svd.write.copy()
            write[0] = 0.5 * write[0] + math.sqrt(0.75) * w / np.linalg.norm(w)  # 60 degrees out of the write span
            attn.read_v[h3], attn.write_o[h3] = svd.read.T * svd.s, write
        write_attention(tuned, layer, attn)
    path = folder / "synthetic-tuned.safetensors"
    save_file({k: v.detach().contiguous() for k, v in tuned.state_dict().items()}, str(path))
    del loaded, tuned
    gc.collect()
    return base_spec, arch, str(path), truth


def check_synthetic(comparison, truth) -> list[str]:
    """Differences between what was built and what was reported (empty when they agree)."""
    problems = []
    got_rew = {(l, h, d.index): d.ratio for l, h, d in comparison.directions("reweighted")}
    got_rot = [(l, h, d.index) for l, h, d in comparison.directions("rotated")]
    if set(got_rew) != set(truth["reweighted"]):
        problems.append(f"reweighted: built {sorted(truth['reweighted'])}, reported {sorted(got_rew)}")
    else:
        for key, alpha in truth["reweighted"].items():
            if abs(got_rew[key] - alpha) > 1e-3 * abs(alpha):
                problems.append(f"ratio of {key}: built {alpha}, reported {got_rew[key]:.5f}")
    if got_rot != truth["rotated"]:
        problems.append(f"rotated: built {truth['rotated']}, reported {got_rot}")
    changed = {(h.layer, h.head) for h in comparison.changed_heads()}
    built = {k[:2] for k in truth["reweighted"]} | {k[:2] for k in truth["rotated"]}
    if changed != built:
        problems.append(f"changed heads: built {sorted(built)}, reported {sorted(changed)}")
    return problems


def dense_reference(base_w, tuned_w, layer: int, head: int) -> tuple[float, float]:
    """The same per-head split with dense D x D matrices and full SVDs (no degenerate-group handling):
    returns (energy_total, energy_in_basis)."""
    A, B = head_factors(base_w, layer, head)
    At, Bt = head_factors(tuned_w, layer, head)
    Wb, Wt = A @ B, At @ Bt
    r = A.shape[1]
    Ub, sb, Vbh = np.linalg.svd(Wb)
    Ut, st, Vth = np.linalg.svd(Wt)
    Ub, sb, Vb = Ub[:, :r], sb[:r], Vbh[:r]
    a = np.einsum("di,de,ie->i", Ub, Wt, Vb)  # u_i^T W_t v_i
    return float(np.sum((Wt - Wb) ** 2)), float(np.sum((a - sb) ** 2))


def timing(base_spec: str, tuned_spec: str, model: str | None, n_heads: int = 6, cos_threshold: float = 0.8) -> str:
    base_l = load_checkpoint(base_spec, model)
    base_w = describe_model(base_l)
    arch = model or architecture_of(base_l)
    del base_l
    tuned_w = describe_model(load_checkpoint(tuned_spec, arch))
    keys = [(l, h) for l in range(base_w.n_layers) for h in range(base_w.n_heads)]
    keys = [keys[i] for i in np.linspace(0, len(keys) - 1, min(n_heads, len(keys))).astype(int)]
    # both single-threaded, as in decompose_model: threaded BLAS on these small problems spins under load
    with threadpool_limits(limits=1, user_api="blas"):
        t_ours, t_ref, worst = _time_heads(base_w, tuned_w, keys, cos_threshold)
    D = base_w.width
    return (f"timing on {len(keys)} heads (D={D}, 1 BLAS thread): factored {1e3 * t_ours / len(keys):.2f} ms/head "
            f"(SVDs + compare), dense reference {1e3 * t_ref / len(keys):.2f} ms/head, ratio dense/factored "
            f"{t_ref / max(t_ours, 1e-12):.1f}x; largest difference relative to the head's change energy: total "
            f"{worst[0]:.1e}, in-basis {worst[1]:.1e} (tie_factor 0; the dense reference also ignores the decompositions' own near-ties)")


def _time_heads(base_w, tuned_w, keys, cos_threshold):
    t_ours = t_ref = worst_total = worst_rew = 0.0
    for l, h in keys:
        t0 = time.perf_counter()
        # tie_factor=0: the dense reference matches vectors one by one, so compare like with like
        hc = compare_heads(decompose_head(base_w, l, h), decompose_head(tuned_w, l, h), cos_threshold, tie_factor=0.0)
        t1 = time.perf_counter()
        tot, rew = dense_reference(base_w, tuned_w, l, h)
        t2 = time.perf_counter()
        t_ours += t1 - t0
        t_ref += t2 - t1
        scale = max(tot, 1e-12 * hc.norm_base ** 2)  # unchanged heads: relative to the head itself
        worst_total = max(worst_total, abs(hc.energy_total - tot) / scale)
        worst_rew = max(worst_rew, abs(hc.energy_in_basis - rew) / scale)
    return t_ours, t_ref, (worst_total, worst_rew)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base")
    p.add_argument("tuned", nargs="*")
    p.add_argument("--model", default=None, help="architecture of checkpoint paths (default: the base's)")
    p.add_argument("--out", default="benchmarks/results/compare", help="output folder")
    p.add_argument("--label", action="store_true", help="explain directions of every checkpoint with concepts")
    p.add_argument("--vocabulary", default=None)
    p.add_argument("--n-directions", type=int, default=None)
    p.add_argument("--synthetic", action="store_true", help="add a constructed tuned checkpoint with known changes")
    p.add_argument("--timing", action="store_true", help="time against a dense reference on a few heads")
    p.add_argument("--config", action="append", default=[], metavar="JSON",
                   help="register an open_clip model config file first (custom architectures); repeatable")
    p.add_argument("--cos-threshold", type=float, default=0.8)
    p.add_argument("--ratio-tol", type=float, default=0.05)
    args = p.parse_args(argv)

    try:
        return run(p, args)
    except WeightscopeError as err:
        print(f"compare_checkpoints: error: {err}", file=sys.stderr)
        return 2


def run(p, args) -> int:
    if args.config:
        import open_clip

        for cfg in args.config:
            open_clip.add_model_config(cfg)
    tuned = list(args.tuned)
    truth = None
    tmp = tempfile.TemporaryDirectory()
    if args.synthetic:
        args.base, args.model, path, truth = synthetic_checkpoint(args.base, args.model, Path(tmp.name))
        tuned.append(path)
    if not tuned:
        p.error("give at least one tuned checkpoint or --synthetic")

    t0 = time.perf_counter()
    from weightscope.bundled import explainer_for_spec, spec_loading

    explainer = explainer_for_spec(args.base, ConceptExplainer(args.vocabulary)) if args.label else None
    comparisons = run_harness(args.base, tuned, explainer=explainer, n_directions=args.n_directions,
                              cos_threshold=args.cos_threshold, ratio_tol=args.ratio_tol, in_process=True,
                              loading=spec_loading(model=args.model)).comparisons
    elapsed = time.perf_counter() - t0
    for c in comparisons:
        print(c.summary(n_heads=8))
        print()
    header, rows = comparison_rows(comparisons, n_concepts=4)
    table = text_table(header, rows)
    print(table)
    print(f"\ncompared {len(comparisons)} checkpoint(s) in {elapsed:.1f} s")
    out = Path(args.out)
    written = write_report(comparisons, out, png=True)
    md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    md += "".join("| " + " | ".join(str(x) for x in r) + " |\n" for r in rows)
    write_atomic(out / "table.md", md)
    print(f"wrote {out}/: table.md, {', '.join(sorted(p.name for p in written.values()))}")
    status = 0
    if truth is not None:
        problems = check_synthetic(comparisons[-1], truth)
        print("synthetic checkpoint: " + ("reported exactly the built changes" if not problems else "; ".join(problems)))
        status = 1 if problems else 0
    if args.timing:
        print(timing(args.base, tuned[0], args.model, cos_threshold=args.cos_threshold))
    tmp.cleanup()
    return status


if __name__ == "__main__":
    sys.exit(main())
