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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar_resnets import CLASSES, SHARED, load_cifar_test  # noqa: E402  (the shared CIFAR network and loader)
from cifar_resnets import load_resnet as _load_resnet  # noqa: E402


def load_resnet(path: Path):
    """A trained CIFAR ResNet from one of the shared .th files (depth read from the file name)."""
    return _load_resnet(int(path.name.split("-")[0].removeprefix("resnet")), path)


def load_test_images(folder: Path):
    """(N, 3, 32, 32) normalised float tensor and (N,) labels of the CIFAR-10 test folders (class order)."""
    return load_cifar_test(folder=folder)


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
        from weightscope.core.fileio import write_atomic
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

    from weightscope.analyses.depth import METHODS, classifier_head, cosine_similarity, similarity_depth
    from weightscope.concepts.embed import default_cache_dir

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
