"""Inputs of Similarity Depth: class lists, matrices from files, a classifier's head, a zero-shot confusion.

Class lists (:func:`read_classes`; ``weightscope.bundled`` adds ``shapes``, the bundled model's 8 shapes): ``cifar10``, ``cifar100``,
``imagenet`` (names from ``concepts/imagenet.txt``, synsets from the shipped ILSVRC-2012 wnids), or a text
file with one class a line: ``name``, ``name<TAB>synset`` (a WordNet id or an nltk-style sense), or a bare
WordNet id (shown by its synset's first lemma).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ...core.defaults import CLASS_LISTS
from ...core.errors import WeightscopeError

BUILTIN_CLASSES = CLASS_LISTS


def read_classes(spec: str) -> tuple[list[str], list[str]]:
    """(display names, synset specs) of a class list (module docstring); both of length C."""
    from ...concepts.vocab import load_vocabulary
    from ...concepts.wordnet import imagenet_wnids, is_wnid, load_wordnet

    if spec in ("cifar10", "cifar100"):
        names = load_vocabulary(spec)
        return names, names
    if spec == "imagenet":
        return load_vocabulary("imagenet"), imagenet_wnids()
    path = Path(spec)
    if not path.is_file():
        raise WeightscopeError(f"--classes {spec!r} is neither a class list ({', '.join(BUILTIN_CLASSES)}) "
                               "nor a file with one class a line")
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    except (OSError, UnicodeDecodeError) as err:
        raise WeightscopeError(f"cannot read class file {path}: {err}") from None
    names, specs = [], []
    for line in lines:
        name, _, syn = (p.strip() for p in line.partition("\t"))
        if not syn and is_wnid(name):
            syn, name = name, ""
        specs.append(syn or name)
        names.append(name)
    if any(not n for n in names):  # bare wnids: show the synset's lemma (its wnid too where lemmas repeat)
        wn = load_wordnet()
        lemmas = [n or wn.name(wn.resolve(s)).rsplit(".", 2)[0] for n, s in zip(names, specs)]
        names = [n if names[i] or lemmas.count(n) == 1 else f"{n} ({specs[i]})" for i, n in enumerate(lemmas)]
    seen = set()
    for n in names:
        if n.casefold() in seen:
            raise WeightscopeError(f"class {n!r} is listed twice in {path}; give each class once")
        seen.add(n.casefold())
    return names, specs


def read_matrix(path: str | Path, what: str) -> np.ndarray:
    """A (C, C) matrix from a .npy file or a .csv file (a header row and a first column of labels are
    skipped when they are not numbers). Shape and values are checked by the caller."""
    path = Path(path)
    if not path.is_file():
        raise WeightscopeError(f"{what} file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            M = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise WeightscopeError(f"cannot read {what} {path} as a .npy array: {err}") from None
        if M.dtype.kind not in "fiub":
            raise WeightscopeError(f"{what} {path} holds {M.dtype} values, not numbers")
        return M.astype(np.float64)
    if path.suffix.lower() not in (".csv", ".txt", ".tsv"):
        raise WeightscopeError(f"{what} {path}: give a .npy or .csv file")
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh, delimiter=delim) if r]

    def numeric(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return False

    if rows and not all(numeric(c) for c in rows[0][1:]):
        rows = rows[1:]
    if rows and not all(numeric(r[0]) for r in rows):
        rows = [r[1:] for r in rows]
    try:
        M = np.array([[float(c) for c in r] for r in rows])
    except ValueError as err:
        raise WeightscopeError(f"{what} {path} is not a numeric matrix ({err})") from None
    if M.ndim != 2:
        raise WeightscopeError(f"{what} {path}: rows have different lengths; expected a square matrix")
    return M


def classifier_head(path: str | Path, class_names: list[str], key: str | None = None):
    """The linear head of a torch classifier saved as a state dict (.pt/.pth/.th/.bin/.safetensors).

    key: the weight's name; by default the last 2-D tensor whose rows match the number of classes
    (a classifier's output layer). Returns a :class:`weightscope.models.linear_heads.LinearHead`.
    """
    from ...models.linear_heads import linear_head
    from ...models.checkpoints import read_checkpoint

    sd = read_checkpoint(path).state_dict
    if key is None:
        fits = [k for k, v in sd.items() if v.ndim == 2 and v.shape[0] == len(class_names) and v.is_floating_point()]
        if not fits:
            raise WeightscopeError(f"{path} has no 2-D weight with {len(class_names)} rows (one per class); "
                                   "check --classes or name the head with --head-key")
        key = fits[-1]
    head = linear_head(sd, class_names, key=key)
    if head.n_classes != len(class_names):
        raise WeightscopeError(f"head {key!r} has {head.n_classes} rows but there are {len(class_names)} classes")
    return head


def zero_shot_confusion(loaded, names, templates, images: np.ndarray, labels: np.ndarray, batch_size: int = 500):
    """Zero-shot classification of labelled uint8 images (N, S, S, 3) at the model's input size by the
    prompt-ensembled head of ``names`` x ``templates``: (head, confusion counts (C, C) with row = true class,
    accuracy)."""
    from ...models.linear_heads import head_from_arrays
    from ..zeroshot import build_classifier, images_to_tensor, zero_shot_accuracy

    W = build_classifier(loaded.model, loaded.tokenizer, names, templates)
    res = zero_shot_accuracy(loaded.model, images_to_tensor(images), labels, W, batch_size=batch_size)
    confusion = np.zeros((len(names), len(names)))
    np.add.at(confusion, (labels, res["predictions"]), 1)
    head = head_from_arrays(W.astype(np.float64), None, names, feature_space="joint (normalised image embedding)")
    return head, confusion, res["accuracy"]
