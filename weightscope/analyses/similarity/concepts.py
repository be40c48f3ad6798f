"""Concept vectors from activations (Net2Vec, Fong & Vedaldi 2018; as used by seed 002, Mikriukov et al. 2023).

For one layer and one concept, a linear probe (scikit-learn ``LogisticRegression``, balanced classes) maps the
layer's features to the concept: its weight vector is the concept vector.

- spatial (where concept masks exist): features (n, h, w, C), one sample per location; the concept's pixel mask
  is area-averaged down to the h x w feature map and a location counts as positive when the concept covers at
  least ``mask_threshold`` of it (Net2Vec's 1x1 convolution + sigmoid is exactly this per-location probe).
  Quality: set IoU over all held-out locations of the prediction thresholded where the training IoU is highest.
- image-level (no masks): features (n, C); quality: average precision (AP) on the held-out images.

Features are divided by one scalar (their root mean square on the training images) before fitting: a single
scale keeps the probe's L2 penalty rotation-invariant, so the concept's responses are unchanged by an orthogonal
transform or an isotropic scaling of the layer's features (per-feature standardisation would break that).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from threadpoolctl import threadpool_limits

from ...core.errors import WeightscopeError


@dataclass
class Concepts:
    """Concept annotations of N images.

    names: C concept names; labels: (N, C) bool, concept present in the image; masks: optional (N, C, h, w) float
    fraction of each mask cell covered by the concept (any resolution at least as fine as the feature maps).
    Raises WeightscopeError when shapes disagree or a concept has one class (in all images or none; with masks: in
    all mask cells or none).
    """

    names: list[str]
    labels: np.ndarray
    masks: np.ndarray | None = None

    def __post_init__(self):
        self.names = [str(n) for n in self.names]
        self.labels = np.asarray(self.labels, dtype=bool)
        if self.labels.ndim != 2 or self.labels.shape[1] != len(self.names):
            raise WeightscopeError(f"labels must be (N, {len(self.names)}) for {len(self.names)} concepts, "
                                   f"got shape {self.labels.shape}")
        if len(set(self.names)) != len(self.names):
            raise WeightscopeError("concept names repeat; give each concept once")
        if self.masks is not None:
            self.masks = np.asarray(self.masks, dtype=np.float32)
            if self.masks.ndim != 4 or self.masks.shape[:2] != self.labels.shape:
                raise WeightscopeError(f"masks must be (N, C, h, w) = {self.labels.shape} + (h, w), got {self.masks.shape}")
        # masked concepts are probed per location: they need covered and uncovered locations, not images
        if self.masks is None:
            present, total, where = self.labels.sum(axis=0), len(self.labels), "images"
        else:
            present, total, where = (self.masks > 0).sum(axis=(0, 2, 3)), self.masks[:, 0].size, "mask cells"
        for name, c in zip(self.names, present):
            if c == 0 or c == total:
                raise WeightscopeError(f"concept {name!r} has one class ({'all' if c else 'none'} of {total} {where} "
                                       "show it); a probe needs examples with and without the concept")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def spatial(self) -> bool:
        return self.masks is not None


@dataclass
class ConceptVector:
    """A fitted probe: response = (features / scale) @ weight + bias (a logit per image or per location).

    weight: (C,); quality: held-out AP (image-level) or IoU (spatial), named by ``metric``; ap: held-out AP of
    the scores in both cases (per location for spatial probes); threshold: the logit cut used for IoU.
    """

    concept: str
    layer: str
    weight: np.ndarray
    bias: float
    scale: float
    metric: str
    quality: float
    ap: float
    threshold: float | None = None

    def respond(self, features: np.ndarray) -> np.ndarray:
        """Concept scores of features (n, [h, w,] C) -> (n, [h, w])."""
        return (np.asarray(features, dtype=np.float64) / self.scale) @ self.weight + self.bias

    def record(self, model: str) -> dict:
        return {"model": model, "layer": self.layer, "concept": self.concept, "metric": self.metric,
                "quality": round(self.quality, 6), "ap": round(self.ap, 6)}


def split_indices(n: int, test_fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic random split of n images into sorted (train, test) index arrays."""
    if not 0.0 < test_fraction < 1.0:
        raise WeightscopeError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    if n_test < 2 or n - n_test < 2:
        raise WeightscopeError(f"{n} images are too few to split into training and held-out images")
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def downsample_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average masks (N, C, H, W) to (N, C, h, w) (exact when h, w divide H, W)."""
    if masks.shape[2] < size[0] or masks.shape[3] < size[1]:
        raise WeightscopeError(f"masks of {masks.shape[2:]} are coarser than the feature map {size}")
    t = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(np.ascontiguousarray(masks)), size)
    return t.numpy()


def _best_iou_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(y[order])
    iou = tp / (np.arange(1, len(y) + 1) + y.sum() - tp)
    return float(scores[order][int(np.argmax(iou))])


def _iou(pred: np.ndarray, y: np.ndarray) -> float:
    union = np.sum(pred | y)
    return float(np.sum(pred & y) / union) if union else 0.0


def _check_two_classes(y: np.ndarray, concept: str, part: str) -> None:
    if y.all() or not y.any():
        raise WeightscopeError(f"concept {concept!r} has one class in the {part} images; use more images")


def fit_concept_vector(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, concept: str, layer: str, *,
    C: float = 1.0, max_samples: int = 50_000, seed: int = 0,
) -> tuple[ConceptVector, np.ndarray]:
    """Fit one probe and score it on held-out data; returns (vector, held-out responses).

    Image-level: x (n, C), y (n,) bool. Spatial: x (n, h, w, C), y (n, h, w) bool; training locations beyond
    max_samples are subsampled (seeded). C: inverse L2 strength of the logistic regression.
    """
    spatial = train_x.ndim == 4
    _check_two_classes(train_y, concept, "training")
    _check_two_classes(test_y, concept, "held-out")
    X = train_x.reshape(-1, train_x.shape[-1]).astype(np.float64)
    y = train_y.reshape(-1)
    scale = float(np.sqrt(np.mean(X ** 2))) or 1.0
    fit_rows = np.arange(len(y))
    if len(y) > max_samples:
        fit_rows = np.sort(np.random.default_rng(seed).choice(len(y), max_samples, replace=False))
        if y[fit_rows].all() or not y[fit_rows].any():
            fit_rows = np.arange(len(y))
    # Newton steps converge in ~10 iterations at tol 1e-8 here; lbfgs took ~350 and stopped further from the optimum
    clf = LogisticRegression(C=C, class_weight="balanced", solver="newton-cholesky", max_iter=200, tol=1e-8)
    clf.fit(X[fit_rows] / scale, y[fit_rows])
    vec = ConceptVector(concept, layer, clf.coef_[0].copy(), float(clf.intercept_[0]), scale, "AP", 0.0, 0.0)
    test_scores = vec.respond(test_x)
    vec.ap = float(average_precision_score(test_y.reshape(-1), test_scores.reshape(-1)))
    if spatial:
        vec.metric = "IoU"
        vec.threshold = _best_iou_threshold(vec.respond(X[fit_rows]), y[fit_rows])
        vec.quality = _iou(test_scores.reshape(-1) >= vec.threshold, test_y.reshape(-1))
    else:
        vec.quality = vec.ap
    return vec, test_scores


def probe_layer(features: np.ndarray, concepts: Concepts, train: np.ndarray, test: np.ndarray, layer: str, *,
                mask_threshold: float = 0.05, C: float = 1.0, seed: int = 0) -> tuple[list[ConceptVector], np.ndarray]:
    """Concept vectors of every concept in one layer; returns (vectors, held-out responses (n_test, [h, w,] C)).

    features: (N, C) image-level or (N, h, w, C) spatial (channels last). Spatial features with image-level concepts
    are averaged over locations; image-level features with masked concepts use the image labels.
    """
    if len(features) != len(concepts):
        raise WeightscopeError(f"layer {layer}: {len(features)} images of activations but {len(concepts)} of "
                               "concept labels; give one label row per image")
    spatial = concepts.spatial and features.ndim == 4
    if features.ndim == 4 and not spatial:
        features = features.mean(axis=(1, 2))
    if features.ndim not in (2, 4):
        raise WeightscopeError(f"layer {layer}: features must be (N, C) or (N, h, w, C), got {features.shape}")
    if spatial:
        fractions = downsample_masks(concepts.masks, features.shape[1:3])
        targets = np.moveaxis(fractions >= mask_threshold, 1, -1)  # (N, h, w, C)
    else:
        targets = concepts.labels
    vectors, responses = [], []
    # small dense problems: threaded BLAS only adds synchronisation, and on busy cores it spins (measured 17 ms per
    # Newton Hessian of 250 x 64 with 2 threads under load); one thread per probe
    with threadpool_limits(limits=1, user_api="blas"):
        for c, name in enumerate(concepts.names):
            vec, resp = fit_concept_vector(features[train], targets[train, ..., c], features[test],
                                           targets[test, ..., c], name, layer, C=C, seed=seed)
            vectors.append(vec)
            responses.append(resp)
    return vectors, np.stack(responses, axis=-1)
