"""Zero-shot accuracy of the bundled shapes-vit checkpoints on held-out shapes-world images.

    python benchmarks/bench_shapes_zeroshot.py [--n 2000] [--per-group 500] [--json out.json]

Prints: load time through stock open_clip, per-attribute zero-shot accuracy (prompt ensembles in the
captions' phrasings, one-object images) for base and tuned, chance level and a same-architecture random-init
model as the reference, and the round-vs-angular accuracy per group of the spurious split.
"""
from __future__ import annotations

import argparse
import json
import time


def main(argv=None) -> int:
    import open_clip
    import torch

    from weightscope.shapes import bundled
    from weightscope.shapes import evaluate as sev

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000, help="held-out one-object images per attribute test")
    p.add_argument("--per-group", type=int, default=500, help="images per group of the spurious split")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    bundled.register()
    t0 = time.perf_counter()
    base = open_clip.create_model(bundled.MODEL_NAME, pretrained=str(bundled.checkpoint_path("base"))).eval()
    load_s = time.perf_counter() - t0
    tuned = open_clip.create_model(bundled.MODEL_NAME, pretrained=str(bundled.checkpoint_path("tuned"))).eval()
    torch.manual_seed(0)
    rand = open_clip.create_model(bundled.MODEL_NAME).eval()
    tok = open_clip.get_tokenizer(bundled.MODEL_NAME)
    print(f"load base checkpoint (stock open_clip, offline): {load_s:.2f} s")

    chance = {t: 1.0 / len(sev.TASKS[t][0]) for t in sev.TASKS}
    rows = {"chance": chance}
    for name, model in (("random-init", rand), ("base", base), ("tuned", tuned)):
        t0 = time.perf_counter()
        rows[name] = sev.attribute_accuracies(model, tok, n=a.n)
        dt = time.perf_counter() - t0
        print(f"{name}: {a.n} held-out images x {len(sev.TASKS)} tasks in {dt:.1f} s")
    print(f"\nzero-shot accuracy on {a.n} held-out one-object images (pre-training distribution)")
    print(f"{'task':<11}" + "".join(f"{k:>13}" for k in rows))
    for t in sev.TASKS:
        print(f"{t:<11}" + "".join(f"{rows[k][t]:>13.3f}" for k in rows))

    # the same tasks with backgrounds independent of shape (the shifted distribution of the tuned model)
    flat = {k: sev.attribute_accuracies(m, tok, n=a.n, spurious_strength=None, tasks=["shape", "family"])
            for k, m in (("base", base), ("tuned", tuned))}
    print("\nwith backgrounds independent of shape: " +
          ", ".join(f"{k} shape {v['shape']:.3f} family {v['family']:.3f}" for k, v in flat.items()))

    spur = {}
    print(f"\nspurious split: round vs angular, {a.per_group} images per group")
    for name, model in (("base", base), ("tuned", tuned)):
        r = sev.spurious_accuracies(model, tok, n_per_group=a.per_group)
        spur[name] = {k: v for k, v in r.items() if k != "predictions"}
        groups = "  ".join(f"{g}: {acc:.3f}" for g, acc in r["groups"].items())
        print(f"{name:<6} average {r['accuracy']:.3f}  worst {r['worst_accuracy']:.3f} ({r['worst_group']})  | {groups}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"load_s": load_s, "attributes": rows, "independent_backgrounds": flat,
                       "spurious": spur}, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
