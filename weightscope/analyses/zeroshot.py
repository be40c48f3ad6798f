"""Zero-shot classification with any open_clip CLIP: prompt-ensemble classifiers and grouped accuracy.

CLIP's usual protocol: each class is described by several prompts (templates filled with the class name,
or with each of its synonyms); their normalised text embeddings are averaged and renormalised into one
class vector; an image goes to the class whose vector has the highest cosine with its normalised embedding.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.errors import WeightscopeError
from ..models.linear_heads import DEFAULT_TEMPLATES, LinearHead, head_from_arrays
from ..models.adapters import encode_image, encode_text


# OpenAI CLIP's normalisation, open_clip's default (the shapes-vit config does not override it), so that
# open_clip.create_model_and_transforms' own preprocess gives the same tensors for uint8 images already at size.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def images_to_tensor(images: np.ndarray, mean=MEAN, std=STD):
    """uint8 images (N, S, S, 3) -> normalised float32 torch tensor (N, 3, S, S)."""
    import torch

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise WeightscopeError(f"expected uint8 images of shape (N, S, S, 3), got {images.dtype} {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


def build_classifier(model, tokenizer, classnames: Sequence, templates: Sequence[str],
                     batch_size: int = 256) -> np.ndarray:
    """Zero-shot classifier (C, E): row c is the normalised mean of the normalised prompt embeddings of class c.

    model: an open_clip CLIP (anything with ``encode_text``); tokenizer: its tokenizer (list[str] -> ids).
    classnames: C entries, each a name or a sequence of synonyms (all synonyms x templates are averaged).
    templates: format strings with one ``{}`` slot, e.g. "a photo of a {}".
    Returns float32 numpy (C, E) with unit rows.
    """
    import torch

    if len(classnames) == 0:
        raise WeightscopeError("classnames is empty; give at least one class name")
    templates = list(templates)
    if not templates or any("{}" not in t for t in templates):
        raise WeightscopeError(f"templates must be a non-empty list of strings with a '{{}}' slot, got {templates!r}")
    prompts, owner = [], []
    for c, names in enumerate(classnames):
        names = [names] if isinstance(names, str) else list(names)
        if not names or any(not isinstance(n, str) or not n for n in names):
            raise WeightscopeError(f"class {c} has no usable name: {classnames[c]!r}; give a non-empty string")
        for n in names:
            for t in templates:
                prompts.append(t.format(n))
                owner.append(c)
    owner = np.asarray(owner)
    was_training = getattr(model, "training", False)
    model.eval()
    feats = []
    try:
        with torch.no_grad():
            for i in range(0, len(prompts), batch_size):
                f = encode_text(model, tokenizer(prompts[i:i + batch_size])).float()
                feats.append(torch.nn.functional.normalize(f, dim=-1).cpu().numpy())
    finally:
        model.train(was_training)
    feats = np.concatenate(feats)
    clf = np.stack([feats[owner == c].mean(0) for c in range(len(classnames))])
    clf /= np.linalg.norm(clf, axis=1, keepdims=True)
    return clf.astype(np.float32)


def encode_images(model, images, preprocess=None, batch_size: int = 256) -> np.ndarray:
    """Normalised image embeddings (N, E) float32.

    images: a torch tensor (N, 3, H, W) already in the model's input form, or a list of PIL images /
    arrays together with ``preprocess`` (one image -> tensor (3, H, W), e.g. open_clip's transform).
    """
    import torch

    n = len(images)
    was_training = getattr(model, "training", False)
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for i in range(0, n, batch_size):
                chunk = images[i:i + batch_size]
                if preprocess is not None:
                    x = torch.stack([preprocess(im) for im in chunk])
                elif isinstance(chunk, torch.Tensor):
                    x = chunk
                else:
                    raise WeightscopeError("images must be a torch tensor (N, 3, H, W) unless a preprocess "
                                           "function is given")
                f = encode_image(model, x).float()
                out.append(torch.nn.functional.normalize(f, dim=-1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def zero_shot_accuracy(model, images, labels, classifier: np.ndarray, groups=None, preprocess=None,
                       batch_size: int = 256) -> dict:
    """Accuracy of a zero-shot classifier (C, E) on images with integer labels (N,).

    groups: optional (N,) group ids or names; then per-group accuracies are reported too.
    Returns {"accuracy": float, "n": N, "predictions": (N,) int array} plus, with groups,
    {"groups": {group: accuracy}, "worst_group": group, "worst_accuracy": float,
    "mean_group_accuracy": float}. Ties in the worst group go to the first group in sorted order.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images):
        raise WeightscopeError(f"labels must be a 1-D array with one label per image ({len(images)}), "
                               f"got shape {labels.shape}")
    classifier = np.asarray(classifier, dtype=np.float32)
    if labels.size and (labels.min() < 0 or labels.max() >= classifier.shape[0]):
        raise WeightscopeError(f"labels must lie in [0, {classifier.shape[0]}) for a {classifier.shape[0]}-class "
                               f"classifier")
    feats = encode_images(model, images, preprocess=preprocess, batch_size=batch_size)
    if feats.shape[1] != classifier.shape[1]:
        raise WeightscopeError(f"classifier width {classifier.shape[1]} does not match the image embedding "
                               f"width {feats.shape[1]}; build it with the same model")
    pred = np.argmax(feats @ classifier.T, axis=1)
    correct = pred == labels
    res = {"accuracy": float(correct.mean()) if correct.size else float("nan"), "n": int(labels.size),
           "predictions": pred}
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != labels.shape:
            raise WeightscopeError(f"groups must have one entry per image ({labels.size}), got shape {groups.shape}")
        names = sorted(set(groups.tolist()), key=str)
        per = {g: float(correct[groups == g].mean()) for g in names}
        worst = min(names, key=lambda g: (per[g], names.index(g)))
        res.update(groups=per, worst_group=worst, worst_accuracy=per[worst],
                   mean_group_accuracy=float(np.mean(list(per.values()))))
    return res


def zero_shot_head(loaded, class_names: Sequence, templates: Sequence[str] = DEFAULT_TEMPLATES) -> LinearHead:
    """A CLIP zero-shot head: one unit row per class, the normalised mean of its prompt embeddings.

    loaded: a weightscope LoadedModel (model + tokenizer). class_names: C names, or C lists of synonyms.
    Features for this head are normalised image embeddings (the joint space, width E); no bias.
    """
    names = [n if isinstance(n, str) else n[0] for n in class_names]
    W = build_classifier(loaded.model, loaded.tokenizer, class_names, templates)
    return head_from_arrays(W.astype(np.float64), None, names, feature_space="joint (normalised image embedding)")
