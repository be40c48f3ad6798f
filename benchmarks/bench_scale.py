"""The real workload: whole-model ``inspect`` of random-init open_clip models with the `general` vocabulary.

Each (model, path) runs in its own process under ``/usr/bin/time -v`` (peak resident memory of the whole run)
with a cold embedding cache, so both paths pay for every phase:
  old  today's path before issue 28: describe every block in float64, every head's SVD, embed the concepts, one
       explain call over every direction of every head (Numba), the head reports (named concepts);
  new  ``inspect_model`` as it is now, given the name: the model built lazily (the text tower and the stem; each
       vision block built when its layer is explained and freed after, ``weightscope.models.lazy``), the text
       tower released once the concepts are embedded, one explain per layer with per-layer partial results
       (resume), batches embedded with reused temporaries (``reused_temporaries``) and freed tensors returned to
       the system (``return_freed_memory``), on ``--device``.
Phases are timed in the child (load, embed, describe + SVD + explain), then the table prints time and peak
memory per path and the ratios new / old.

    .venv/bin/python benchmarks/bench_scale.py                       # ViT-B-16 and ViT-L-14, general, CPU
    .venv/bin/python benchmarks/bench_scale.py --models ViT-B-16 --layers 11 --vocab general:2000
    .venv/bin/python benchmarks/bench_scale.py --device cuda --paths new   # on a GPU (prints its name)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(args) -> None:
    """One run; prints one JSON line 'PHASES {...}' with the phase times (seconds)."""
    import numpy as np

    phases: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    from weightscope.analyses import inspection
    from weightscope.concepts import explainer as explainer_module
    from weightscope.models.load import load_model

    layers = None if args.layers is None else [int(x) for x in args.layers.split(",")]
    if args.path == "new":
        # the model is given by name: inspect_model loads it, so it may release the text tower once used
        explainer = explainer_module.ConceptExplainer(args.vocab, device=args.device, backend=args.backend)
        inspection.load_model = timed("load", inspection.load_model)
        explainer_module.embed_concepts = timed("embed", explainer_module.embed_concepts)
        inspection._explain_layer = timed("svd+explain+reports", inspection._explain_layer)
        inspection.ensure_blocks = timed("build blocks", inspection.ensure_blocks)   # in load, on the old path
        t0 = time.perf_counter()
        result = inspection.inspect_model(args.model, explainer, layers=layers, progress=False, resume=False)
        phases["total (load excluded)"] = time.perf_counter() - t0 - phases["load"]
        label = explainer.compute.describe()
    else:
        t0 = time.perf_counter()
        loaded = load_model(args.model)
        phases["load"] = time.perf_counter() - t0
        from weightscope.concepts.embed import embed_concepts
        from weightscope.concepts.solvers import explain
        from weightscope.concepts.vocab import parse_vocabulary_spec
        from weightscope.decompose.head_svd import decompose_model
        from weightscope.decompose.joint import to_joint
        from weightscope.models.adapters import describe_model

        t_all = time.perf_counter()
        concepts, _ = parse_vocabulary_spec(args.vocab)
        t0 = time.perf_counter()
        weights = describe_model(loaded)
        svds = decompose_model(weights, layers=layers, progress=False)
        phases["describe+svd"] = time.perf_counter() - t0
        dictionary = timed("embed", embed_concepts)(loaded.model, loaded.tokenizer, concepts, model_name=loaded.name,
                                                     normalize="splice", progress=False)
        t0 = time.perf_counter()
        keys, signals = [], []
        for (l, h), svd in svds.items():
            for side, vectors in (("write", svd.write), ("read", svd.read)):
                signals.append(to_joint(weights, vectors[:svd.rank]))
                keys.extend((l, h, side, i) for i in range(svd.rank))
        ex = explain(np.vstack(signals), dictionary, method="comp", k=5, lam=0.3, both_signs=True, progress=False)
        phases["explain"] = time.perf_counter() - t0
        t0 = time.perf_counter()   # the head reports, as inspect built them (named concepts of every direction)
        plus, minus = ex.split_signs()
        directions = [inspection.explained_direction(e, row, concepts, i, side, sign, None)
                      for row, (l, h, side, i) in enumerate(keys) for sign, e in ((1, plus), (-1, minus))]
        phases["reports"] = time.perf_counter() - t0
        phases["total (load excluded)"] = time.perf_counter() - t_all
        result = ex
        assert len(directions) == len(ex)
        label = "cpu, fp32, numba"
    print("PHASES " + json.dumps({"phases": phases, "compute": label, "n": len(result.heads) if args.path == "new"
                                  else len(ex) // 2, "param_bytes": _param_bytes(args.model)}), flush=True)


def _param_bytes(name: str) -> int:
    """fp32 bytes of the architecture's parameters (built on the meta device: no memory)."""
    import open_clip
    import torch

    with torch.device("meta"):
        model = open_clip.create_model(name, pretrained=None, device="meta")
    return 4 * sum(p.numel() for p in model.parameters())


def _run(model, path, args) -> dict:
    cache = tempfile.mkdtemp(prefix="ws-bench-scale-")
    cmd = [sys.executable, __file__, "--child", path, "--model", model, "--vocab", args.vocab,
           "--device", args.device] + (["--layers", args.layers] if args.layers else []) + \
          (["--backend", args.backend] if args.backend else [])
    timer = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    if timer:
        cmd = [timer, "-v"] + cmd
    env = {**os.environ, "WEIGHTSCOPE_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"{model} {path} failed:\n{proc.stderr[-3000:]}")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("PHASES "))
    out = json.loads(line[7:])
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    out["peak_gb"] = int(m.group(1)) * 1024 / 1e9 if m else float("nan")   # kibibytes -> GB (1e9 bytes)
    out["wall"] = wall
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--models", default="ViT-B-16,ViT-L-14")
    ap.add_argument("--vocab", default="general")
    ap.add_argument("--layers", default=None, help="comma list of layers (default: the whole model)")
    ap.add_argument("--paths", default="old,new", help="old, new or both (default)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps", "auto"], help="device of the new path")
    ap.add_argument("--backend", default=None, choices=["numba", "torch"], help="solver backend of the new path")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.path = args.child
        _child(args)
        return 0

    import torch

    gpu = f"; GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "; no GPU"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs{gpu}; load average "
          f"{os.getloadavg()[0]:.1f} at start (a shared machine: wall times vary with the load)")
    print(f"workload: inspect {args.vocab}, layers {args.layers or 'all'}, COMP k=5 lambda=0.3, both signs; "
          "random-init weights; cold embedding cache")
    paths = [p for p in ("old", "new") if p in args.paths.split(",")]
    for model in args.models.split(","):
        res = {p: _run(model, p, args) for p in paths}
        for p, r in res.items():
            ph = ", ".join(f"{k} {v:.1f} s" for k, v in r["phases"].items())
            print(f"{model:>9} {p:>3} [{r['compute']}]: {ph}; process wall {r['wall']:.1f} s; "
                  f"peak RSS {r['peak_gb']:.2f} GB = {r['peak_gb'] * 1e9 / r['param_bytes']:.2f}x the fp32 parameter "
                  f"bytes ({r['param_bytes'] / 1e9:.2f} GB; goal <= 2x)")
        if len(res) == 2:
            o, n = res["old"], res["new"]
            t_o, t_n = o["phases"]["total (load excluded)"], n["phases"]["total (load excluded)"]
            print(f"{model:>9} new / old: time {t_n / t_o:.2f}x (load excluded; the new path builds each vision "
                  f"block as it explains it, the old one in its load), process wall {n['wall'] / o['wall']:.2f}x, "
                  f"peak memory {n['peak_gb'] / o['peak_gb']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
