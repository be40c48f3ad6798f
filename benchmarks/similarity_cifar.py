"""Concept-based layer similarity of the four CIFAR-10 ResNets (20/32/44/56) on the CIFAR-10 test images.

    python benchmarks/similarity_cifar.py [--n-images 10000] [--out benchmarks/out/similarity_cifar]

Per model, every residual block's output (and the stem's) is globally average-pooled; for each of the 10 class
concepts an image-level logistic probe is fitted on half of the images (the concept vector) and scored on the other
half (held-out AP). Two layers (same or different models) are compared by the correlation of their concept scores
on the held-out images, averaged over the concepts; linear CKA of the pooled features is computed beside it.
Printed: the probe qualities, the model x model similarity, and the relative-depth number (Spearman correlation
between a layer's relative depth and that of its best match in another model, over all pairs of models).
Needs ../shared/models/cifar10-resnets and ../shared/data/cifar10-test beside the repository.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from weightscope.models.activations import pool_spatial  # noqa: E402
from weightscope.reports.similarity import write_report  # noqa: E402
from weightscope.analyses.similarity import ProbeOptions, compare_probed, folder_concepts, probe_model  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from cifar_resnets import MEAN, STD, load_resnet  # noqa: E402  (the shared CIFAR network)


class CifarInputs:
    """Decoded images (N, 32, 32, 3) uint8, normalised per slice (only one batch of floats at a time)."""

    def __init__(self, files):
        from PIL import Image

        self.images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, sl):
        x = torch.from_numpy(self.images[sl]).permute(0, 3, 1, 2).float().div_(255)
        return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--n-images", type=int, default=10_000, help="images used (seeded subset; default all 10,000)")
    ap.add_argument("--depths", default="20,32,44,56", help="which ResNets (default all four)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "similarity_cifar"))
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = SHARED / "data" / "cifar10-test"
    if not data.is_dir() or not (SHARED / "models" / "cifar10-resnets").is_dir():
        print(f"needs {data} and {SHARED / 'models' / 'cifar10-resnets'}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    files, concepts = folder_concepts(data, None if args.n_images >= 10_000 else args.n_images, seed=0)
    inputs = CifarInputs(files)
    t_load = time.perf_counter() - t0
    probed = []
    for depth in (int(d) for d in args.depths.split(",")):
        net = load_resnet(depth)
        probed.append(probe_model(net, inputs, concepts, net.hook_names(), name=f"resnet{depth}", reduce=pool_spatial,
                                  options=ProbeOptions(batch_size=500), progress=not args.quiet))
    sim = compare_probed(probed, {"n_images": len(inputs), "data": "CIFAR-10 test (JPEG)", "probe": "image-level"})
    t_all = time.perf_counter() - t0
    print(sim.summary_text())
    print(f"\n{len(inputs)} images ({len(probed[0].test)} held out), {len(probed)} models, "
          f"{sum(len(p.layers) for p in probed)} layers; image loading {t_load:.1f} s, total {t_all:.1f} s "
          f"on {args.threads} threads")
    for p in probed:
        last = np.mean([v.quality for v in p.vectors[-1]])
        first = np.mean([v.quality for v in p.vectors[0]])
        print(f"{p.name}: mean held-out AP over the 10 classes: stem {first:.3f}, last block {last:.3f}")
    written = write_report(sim, args.out)
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
