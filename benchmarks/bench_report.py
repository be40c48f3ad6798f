"""The whole-model inspect report of a random-init ViT-L-14 (384 heads) in headless Chromium: page size against the
result JSON, time to write the page, and time to interactive (navigation start to the end of the page's scripts),
a search over every concept of every direction, and a re-sort of all head cards. Measured, not asserted.

    python benchmarks/bench_report.py [--model ViT-L-14] [--vocab general:5000] [--inspection FILE] [--runs 3]

Without --inspection it first runs `weightscope inspect MODEL --vocab VOCAB` (all layers, heads and directions;
minutes on a CPU) into a temporary folder, and reports that time too. Needs chromium, chromium-driver and selenium
(the dev extra). The figures depend on the machine: it is printed with them.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser_helpers import Browser, missing_reason  # noqa: E402


def _synthetic(layers: int = 24, heads: int = 16, rank: int = 64, vocab: int = 5000, k: int = 5, seed: int = 0):
    import numpy as np

    from weightscope.analyses.inspection import Direction, HeadReport, Inspection

    rng = np.random.default_rng(seed)
    words = [f"concept{i:04d}" for i in range(vocab)]
    reports = {}
    for l in range(layers):
        for h in range(heads):
            s = sorted(rng.uniform(0.2, 1.2, rank).round(6), reverse=True)
            dirs = [Direction(i, side, sign, [words[j] for j in rng.choice(vocab, k, replace=False)],
                              sorted(rng.uniform(0.01, 0.6, k).round(4), reverse=True), round(float(rng.uniform(0.2, 0.9)), 6))
                    for i in range(rank) for side in ("write", "read") for sign in (1, -1)]
            reports[l, h] = HeadReport(l, h, [float(x) for x in s], [], dirs)
    settings = {"method": "comp", "k": k, "lam": 0.3, "joint_mode": "linear", "normalize": "l2", "image_mean": False,
                "sides": ["write", "read"], "n_directions": None}
    return Inspection("ViT-L-14 (synthetic shape)", f"synthetic:{vocab}", vocab, settings, reports)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-L-14")
    ap.add_argument("--vocab", default="general:5000")
    ap.add_argument("--inspection", help="an inspection.json already made (skips the inspect run)")
    ap.add_argument("--runs", type=int, default=3, help="page loads timed (fresh browser profile each)")
    ap.add_argument("--synthetic", action="store_true",
                    help="no inspect run: a result of ViT-L-14's shape (24 x 16 heads, 64 directions, both sides and "
                         "signs, k = 5 concepts of a 5,000-word vocabulary, seeded random numbers); the page's size and "
                         "load time depend on that shape, not on the values")
    args = ap.parse_args()
    reason = missing_reason()
    if reason:
        sys.exit(f"bench_report: {reason}")
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs visible, {platform.processor() or platform.machine()}"
          " (shared with other sessions: absolute times vary)")
    work = Path(tempfile.mkdtemp(prefix="ws-bench-report-"))
    if args.synthetic:
        source = work / "inspection.json"
        _synthetic().to_json(source)
        print("synthetic ViT-L-14-shaped inspection (no model run)")
    elif args.inspection:
        source = Path(args.inspection)
    else:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "weightscope.cli", "inspect", args.model, "--vocab", args.vocab,
                        "--out", str(work), "--quiet"], check=True, stdout=subprocess.DEVNULL)
        print(f"weightscope inspect {args.model} --vocab {args.vocab}: {time.perf_counter() - t0:.1f} s")
        source = work / "inspection.json"

    from weightscope.analyses.inspection import Inspection
    from weightscope.reports.inspection import write_report

    result = Inspection.from_json(source)
    n_dirs = sum(len(rep.directions) for rep in result.heads.values())
    t0 = time.perf_counter()
    page = write_report(result, work / "report.html")
    write_s = time.perf_counter() - t0
    mb = page.stat().st_size / 1e6
    print(f"{len(result.heads)} heads, {n_dirs} explained directions; inspection.json "
          f"{source.stat().st_size / 1e6:.1f} MB; report.html {mb:.2f} MB (written in {write_s:.1f} s)")

    ready, load, search, sort = [], [], [], []
    for _ in range(args.runs):
        b = Browser()
        try:
            errors = b.open(page)
            ready.append(b.js("return WS.readyAt"))
            load.append(b.js("const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd"))
            search.append(b.js("const t = performance.now(); const n = WS.searchers[0]('re').length; "
                               "return performance.now() - t"))
            sort.append(b.js("const s = document.getElementById('ws-sort'), t = performance.now(); s.value = 'sigma'; "
                             "s.dispatchEvent(new Event('change')); return performance.now() - t"))
        finally:
            b.close()
        if errors:
            print("console errors:", errors[:3])
    med = statistics.median
    print(f"headless Chromium, {args.runs} loads (median): interactive (scripts done) {med(ready):.0f} ms, "
          f"load event {med(load):.0f} ms; search 're' over every concept {med(search):.0f} ms; "
          f"re-sort of {len(result.heads)} cards {med(sort):.0f} ms")
    print(f"targets (issue 30): < 10 MB -> {'met' if mb < 10 else 'NOT met'}; interactive < 2 s -> "
          f"{'met' if med(ready) < 2000 else 'NOT met'}")


if __name__ == "__main__":
    main()
