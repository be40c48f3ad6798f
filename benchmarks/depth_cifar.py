"""Similarity Depth of four real CIFAR-10 ResNets, and whether their errors follow their class similarities.

    python benchmarks/depth_cifar.py [--models DIR] [--images DIR] [--threads 2] [--out DIR] [--no-cache]

For each of ResNet-20/32/44/56 (../shared/models/cifar10-resnets): class templates = rows of the 10 x 64 head
``linear.weight`` (data-free), Similarity Depth per clustering method; confusion matrix of the network on the
10,000 shared CIFAR-10 test images (JPEG; computed once, cached by model-file hash), then direct and extended
compliance of the similarity trees with the confusion trees (Affinity Propagation on both, as in seed 003).
Prints the table and checks the paper's claim across the four models: does higher SD go with higher
compliance (Spearman rank correlation of SD with each compliance ratio)?
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# ------------------------------------------------------------------------------------------------------
# Minimal CIFAR ResNet (He et al. 2016, CIFAR variant, option-A shortcuts), written from the facts in
# ../shared/models/cifar10-resnets/README.md. Kept apart so that it can be replaced by a shared loader.
# ------------------------------------------------------------------------------------------------------


def build_resnet(depth: int):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.pad = (cout - cin) // 2 if stride != 1 or cin != cout else None

        def forward(self, x):
            out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            short = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
            return F.relu(out + short)

    class ResNet(nn.Module):
        def __init__(self, n: int):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            stages, cin = [], 16
            for cout, stride in ((16, 1), (32, 2), (64, 2)):
                blocks = []
                for b in range(n):
                    blocks.append(Block(cin, cout, stride if b == 0 else 1))
                    cin = cout
                stages.append(nn.Sequential(*blocks))
            self.layer1, self.layer2, self.layer3 = stages
            self.linear = nn.Linear(64, 10)

        def forward(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    return ResNet((depth - 2) // 6)


def load_resnet(path: Path):
    """A trained CIFAR ResNet from one of the shared .th files (depth read from the file name)."""
    from weightscope.load import read_state_dict

    depth = int(path.name.split("-")[0].removeprefix("resnet"))
    net = build_resnet(depth)
    net.load_state_dict(read_state_dict(path), strict=True)
    return net.eval()


def load_test_images(folder: Path):
    """(N, 3, 32, 32) normalised float tensor and (N,) labels of the CIFAR-10 test folders (class order)."""
    import torch
    from PIL import Image

    xs, ys = [], []
    for label, name in enumerate(CLASSES):
        for f in sorted((folder / name).glob("*.jpg")):
            xs.append(np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8))
            ys.append(label)
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float().div_(255.0)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return x, np.asarray(ys)


# ------------------------------------------------------------------------------------------------------


def confusion_matrix(path: Path, images, labels, cache_dir: Path | None) -> np.ndarray:
    """Counts (10, 10), row = true class; cached under cache_dir by the model file's and labels' hash."""
    import torch

    key = hashlib.sha256(path.read_bytes() + labels.tobytes()).hexdigest()[:16]
    cached = cache_dir / f"confusion-{path.stem}-{key}.npy" if cache_dir else None
    if cached is not None and cached.is_file():
        return np.load(cached)
    from tqdm import tqdm

    net = load_resnet(path)
    with torch.no_grad():
        pred = np.concatenate([net(images[i:i + 500]).argmax(1).numpy()
                               for i in tqdm(range(0, len(images), 500), desc=path.stem, leave=False)])
    counts = np.zeros((10, 10))
    np.add.at(counts, (labels, pred), 1)
    if cached is not None:
        from weightscope.fileio import write_atomic
        import io

        buf = io.BytesIO()
        np.save(buf, counts)
        write_atomic(cached, buf.getvalue())
    return counts


def spearman(a, b) -> float:
    """Spearman's rho; NaN when a column is constant (no ranking to correlate)."""
    from scipy.stats import spearmanr

    if len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _sd(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{x:.2f}"


def main(argv=None) -> int:
    import torch

    from weightscope.depth import METHODS, classifier_head, cosine_similarity, similarity_depth
    from weightscope.embed import default_cache_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=Path, default=SHARED / "models" / "cifar10-resnets")
    p.add_argument("--images", type=Path, default=SHARED / "data" / "cifar10-test")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-cache", action="store_true", help="recompute the confusion matrices from the images")
    p.add_argument("--out", type=Path, default=None, help="also write each model's report to OUT/<model>/")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    paths = sorted(a.models.glob("resnet*.th"), key=lambda q: int(q.name.split("-")[0][6:]))
    if not paths or not a.images.is_dir():
        print(f"need the shared CIFAR-10 ResNets in {a.models} and test images in {a.images}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    cache = None if a.no_cache else default_cache_dir() / "depth_cifar"
    images = labels = None
    results = []
    for path in paths:
        if images is None and (cache is None or not any(cache.glob(f"confusion-{path.stem}-*.npy"))):
            images, labels = load_test_images(a.images)
        if labels is None:  # every matrix is cached: the labels (folder sizes) are all the key needs
            labels = np.repeat(np.arange(10), [len(list((a.images / c).glob("*.jpg"))) for c in CLASSES])
        counts = confusion_matrix(path, images, labels, cache)
        head = classifier_head(path, list(CLASSES))
        r = similarity_depth(cosine_similarity(head), CLASSES, confusion=counts, methods=METHODS,
                             source=path.stem.split("-")[0], accuracy=float(np.trace(counts) / counts.sum()))
        results.append(r)
        if a.out:
            from weightscope.reports.depth import write_report

            write_report(r, a.out / r.source)
    header = ("model", "acc %", "SD aff", "SD louv", "SD opt", "SD hdb", "clust", "direct s", "direct c",
              "ext s", "ext c", "err depth")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in results:
        aff = r.methods["affinity"]
        d, e = aff.direct, aff.extended
        print(" | ".join([r.source, f"{100 * r.accuracy:.1f}", *(_sd(r.methods[m].sd) for m in METHODS),
                          str(aff.n_clusters), f"{d[0]:.2f}", f"{d[1]:.2f}", f"{e[0]:.2f}", f"{e[1]:.2f}",
                          f"{aff.confusion_sd:.2f}"]))
    sd = [r.methods["affinity"].sd for r in results]
    print("\nPaper's claim (higher Similarity Depth, higher compliance), Spearman rho over the models (affinity):")
    for label, vals in (("direct, similarities confused", [r.methods["affinity"].direct[0] for r in results]),
                        ("direct, confusions explained", [r.methods["affinity"].direct[1] for r in results]),
                        ("extended, similarities confused", [r.methods["affinity"].extended[0] for r in results]),
                        ("extended, confusions explained", [r.methods["affinity"].extended[1] for r in results])):
        rho = spearman(sd, vals)
        verdict = "undefined (a constant column)" if np.isnan(rho) else (
            "supports the claim" if rho > 0 else "contradicts the claim" if rho < 0 else "no relation")
        print(f"  SD vs {label:32s} rho = {rho:+.2f}  -> {verdict}")
    print(f"  (for reference, SD vs accuracy rho = {spearman(sd, [r.accuracy for r in results]):+.2f}; "
          f"{len(results)} models and tied SDs make any of these weak evidence)")
    print("  n/a: every class its own cluster (Louvain with the authors' self-loops), so no tree edges")
    print(f"\n{len(results)} models in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
