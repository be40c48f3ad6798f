"""Head inspection: what does each attention head write and read? (load -> decompose -> embed -> explain)

    from weightscope import inspect_model
    result = inspect_model()                      # the bundled shapes-world model, default vocabulary
    print(result.summary())
    result[5, 2].direction(0).concepts            # top write direction of layer 5, head 2, explained
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tqdm.auto import tqdm

from ..models.adapters import describe_model, encode_image, text_adapter
from ..decompose.head_svd import _select, decompose_model
from ..concepts.embed import default_cache_dir, embed_concepts, vocabulary_hash
from ..core.compute import as_compute
from ..core.version import __version__
from .resume import LayerStore, array_digest, run_key
from ..core.errors import WeightscopeError
from ..core.fileio import dump_json, parse_json
from ..decompose.joint import to_joint
from ..core.linalg import numerical_rank
from ..models.load import LoadedModel, load_model
from ..concepts.solvers import explain
from ..concepts.vocab import parse_vocabulary_spec

SIDES = ("write", "read")
NO_CONCEPT = "(no concept)"
COEFFICIENT_DECIMALS = 6  # coefficients are stored rounded to this many decimals
BUNDLED_VOCAB = "shapes_world,general:5000"
WHAT = ("vo", "qk", "mlp")  # what inspect_model can explain: value-output, query-key, MLP neurons
GENERAL_VOCAB = "general"


@dataclass
class Direction:
    """One singular direction of a head, explained with one sign.

    index: position in the head's singular values; side: "write" (right singular vector, what the head adds to
    the residual stream) or "read" (left singular vector, what it responds to); sign: +1 explains v, -1 explains -v;
    concepts / coefficients: the sparse explanation, largest coefficient first (atoms
    the refit set to zero are dropped); fidelity: cosine between the direction's
    joint-space image and its reconstruction; group: the degenerate group it belongs to (only the span is defined).
    """

    index: int
    side: str
    sign: int
    concepts: list[str]
    coefficients: list[float]
    fidelity: float
    group: list[int] | None = None

    def label(self, n: int = 3) -> str:
        """The first n concepts with their coefficients, or "(no concept)" when the explanation is empty."""
        if not self.concepts:
            return NO_CONCEPT
        return ", ".join(f"{c} ({format_coefficient(w)})" for c, w in zip(self.concepts[:n], self.coefficients[:n]))

    def fidelity_label(self) -> str:
        """The fidelity to 2 decimals; "-" for an empty explanation (it reconstructs nothing)."""
        return f"{self.fidelity:.2f}" if self.concepts else "-"


def format_coefficient(w: float) -> str:
    """Two decimals, or two significant digits below 0.01: a kept (non-zero) coefficient never reads 0.00."""
    return f"{w:.2f}" if abs(w) >= 0.01 else f"{w:.2g}"


@dataclass
class HeadReport:
    """One head: singular values s (r,), degenerate groups, its explained directions, and its rank.

    rank: how many leading singular values stand above the rounding level of the weights
    (``decompose.HeadSVD.rank``); only those are directions, explained and counted in the theme. A head of
    rank 0 is dead: it writes nothing. Default (older JSON): ``linalg.numerical_rank`` of s.
    """

    layer: int
    head: int
    s: list[float]
    groups: list[list[int]]
    directions: list[Direction]
    rank: int | None = None

    def __post_init__(self):
        if self.rank is None:
            self.rank = numerical_rank(np.asarray(self.s, dtype=np.float64))

    @property
    def dead(self) -> bool:
        return self.rank == 0

    def explained(self, side: str = "write") -> list[int]:
        """Indices of the directions explained on ``side``, ascending."""
        return sorted({d.index for d in self.directions if d.side == side})

    def direction(self, index: int, side: str = "write", sign: int = 1) -> Direction:
        for d in self.directions:
            if d.index == index and d.side == side and d.sign == sign:
                return d
        raise WeightscopeError(
            f"layer {self.layer} head {self.head} has no explained {side} direction {index} with sign {sign:+d}"
        )

    def theme(self, n_directions: int = 4, side: str = "write") -> str:
        """The head's dominant concept: coefficient x singular value, summed over its leading directions."""
        score: dict[str, float] = defaultdict(float)
        for d in self.directions:
            if d.side == side and d.index < n_directions:
                for c, w in zip(d.concepts, d.coefficients):
                    score[c] += w * self.s[d.index]
        return max(sorted(score), key=score.__getitem__) if score else ""


@dataclass
class Inspection:
    """Explanations of the chosen heads of one model. Index with ``result[layer, head]``."""

    model: str
    vocabulary: str
    vocabulary_size: int
    settings: dict
    heads: dict[tuple[int, int], HeadReport] = field(default_factory=dict)
    qk: dict = field(default_factory=dict)  # (layer, head) -> neurons.QKReport, when "qk" was asked for
    neurons: dict = field(default_factory=dict)  # (layer, neuron) -> neurons.NeuronReport, when "mlp" was

    def __getitem__(self, key: tuple[int, int]) -> HeadReport:
        if key not in self.heads:
            raise WeightscopeError(f"layer {key[0]} head {key[1]} was not inspected; inspected: {sorted(self.heads)[:6]} ...")
        return self.heads[key]

    @property
    def layers(self) -> list[int]:
        return sorted({l for l, _ in self.heads})

    def top_concepts(self, layer: int, head: int, n_directions: int = 3, side: str = "write") -> list[str]:
        """Top concept of each leading direction (sign +) of one head."""
        rep = self[layer, head]
        return [rep.direction(i, side, 1).concepts[0] for i in rep.explained(side)[:n_directions]
                if rep.direction(i, side, 1).concepts]

    def summary(self, n_directions: int = 3, n_concepts: int = 3) -> str:
        lines = [f"{self.model}: {len(self.heads)} heads, vocabulary {self.vocabulary} ({self.vocabulary_size} concepts), "
                 f"{self.settings['method']} k={self.settings['k']} lambda={self.settings['lam']}"]
        side = "write" if "write" in self.settings.get("sides", SIDES) else "read"
        for (l, h), rep in sorted(self.heads.items()):
            if rep.dead:
                lines.append(f"L{l:<2} H{h:<2} dead: writes nothing (no singular value above rounding level)")
                continue
            lines.append(f"L{l:<2} H{h:<2} theme: {rep.theme(side=side) or '-'}   s = "
                         + " ".join(f"{x:.2f}" for x in rep.s[:min(n_directions, rep.rank)]))
            for i in rep.explained(side)[:n_directions]:
                d_pos, d_neg = rep.direction(i, side, 1), rep.direction(i, side, -1)
                tied = f" (tied with {d_pos.group})" if d_pos.group else ""
                for j, d in enumerate((d_pos, d_neg)):
                    head = f"{side[0]}{i}{tied} +" if j == 0 else " " * (len(str(i)) + len(tied) + 1) + " -"
                    fid = f" [fid {d.fidelity:.2f}]" if d.concepts else ""
                    lines.append(f"    {head}: {d.label(n_concepts)}{fid}")
        if self.qk or self.neurons:
            from .neurons import summary_lines
            lines.extend(summary_lines(self.neurons, self.qk, n_directions, n_concepts))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "model": self.model, "vocabulary": self.vocabulary, "vocabulary_size": self.vocabulary_size,
            "settings": self.settings,
            "heads": [{**asdict(rep), "dead": rep.dead} for _, rep in sorted(self.heads.items())],
            **self._extra_dict(),
        }

    def _extra_dict(self) -> dict:
        from .neurons import neurons_to_list, qk_to_list
        return {**({"qk": qk_to_list(self.qk)} if self.qk else {}),
                **({"neurons": neurons_to_list(self.neurons)} if self.neurons else {})}

    @classmethod
    def from_dict(cls, data: dict) -> "Inspection":
        heads = {}
        for rep in data["heads"]:
            dirs = [Direction(**d) for d in rep["directions"]]
            heads[rep["layer"], rep["head"]] = HeadReport(rep["layer"], rep["head"], rep["s"], rep["groups"], dirs,
                                                          rep.get("rank"))
        from .neurons import neurons_from_list, qk_from_list
        return cls(data["model"], data["vocabulary"], data["vocabulary_size"], data["settings"], heads,
                   qk_from_list(data.get("qk", [])), neurons_from_list(data.get("neurons", [])))

    def to_json(self, path: str | Path | None = None) -> str:
        return dump_json(self.to_dict(), path)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "Inspection":
        return parse_json(text_or_path, "inspection", cls.from_dict)


def explained_direction(ex, row: int, concepts: list[str], index: int, side: str, sign: int,
                        group: list[int] | None = None) -> Direction:
    """Row ``row`` of an Explanation as a :class:`Direction`, atoms by weight, largest first.

    The least-squares refit can zero an early pick, and a coefficient that rounds to zero in the stored precision
    is dropped too (never a zero-weight concept).
    """
    coef = np.round(ex.coefficients[row], COEFFICIENT_DECIMALS)
    picked = np.flatnonzero((ex.indices[row] >= 0) & (coef != 0))
    picked = picked[np.argsort(-np.abs(coef[picked]), kind="stable")]
    return Direction(index=index, side=side, sign=sign, concepts=[concepts[j] for j in ex.indices[row][picked]],
                     coefficients=[float(c) for c in coef[picked]], fidelity=round(float(ex.fidelity[row]), 6),
                     group=group)


def parse_what(what) -> tuple[str, ...]:
    """What to explain, from "vo,qk,mlp" or a sequence: a non-empty tuple of names in WHAT, duplicates dropped."""
    items = what.split(",") if isinstance(what, str) else list(what)
    items = tuple(dict.fromkeys(str(w).strip() for w in items))
    if not items or any(w not in WHAT for w in items):
        raise WeightscopeError(f"what to explain must be a comma list of {', '.join(WHAT)}, got {what!r}")
    return items


def inspect_model(
    model=None,
    vocabulary=None,
    *,
    pretrained: str | None = None,
    checkpoint: str | Path | None = None,
    layers=None,
    heads=None,
    method: str = "comp",
    k: int = 5,
    lam: float = 0.3,
    n_directions: int | None = None,
    sides: tuple[str, ...] = SIDES,
    image_mean: np.ndarray | None = None,
    joint_mode: str = "linear",
    normalize: str | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    what=("vo",),
    n_neurons: int | None = None,
    compute=None,
    resume: bool = True,
    free_model: bool = False,
) -> Inspection:
    """Explain the singular directions of chosen heads with concepts from a vocabulary.

    model: a LoadedModel, an open_clip module, or a name (with pretrained/checkpoint as in ``load_model``);
    None = the bundled shapes-world model. vocabulary: a spec for :func:`parse_vocabulary_spec` or a list; default
    "shapes_world,general:5000" for the bundled model and "general" otherwise. layers / heads: indices (default all).
    method, k, lam: the solver (see ``weightscope.concepts.solvers.explain``). n_directions: explain only the leading
    directions of each head (default: all dh). sides: "write" and/or "read". image_mean (E,): modality-gap
    correction (see ``image_mean_from_folder``); default none. normalize: concept-embedding normalisation
    ("splice", "l2", "none"; see ``weightscope.concepts.embed``); default "splice" (SITH's recipe), except "l2" for the
    bundled model: its text tower never saw the general words, which therefore sit in one tight cluster that
    dominates the dictionary mean, and subtracting that mean turns their residual noise into strong false
    matches (measured on the shipped base: 23 % vs 77 % of leading directions explained by a shapes-world concept).
    Each direction is explained with both signs. what: any of "vo" (value-output, the heads), "qk" (query-key
    directions, ``Inspection.qk``), "mlp" (MLP neurons, ``Inspection.neurons``; the leading ``n_neurons`` per
    layer by score, default all); see :mod:`weightscope.analyses.neurons`.
    compute: a ``weightscope.core.compute.Compute`` (device, precision, solver backend; default CPU, fp32, Numba).
    resume: a run over several layers saves each finished layer's heads under the cache dir and, rerun after an
    interruption with the same inputs, starts from there (it says so on stderr); False starts over.
    free_model: release the model's tensors once read (the caller hands it over; always so for a model loaded
    here): the text tower after the concepts are embedded, the rest once the vision weights are described.
    """
    what = parse_what(what)
    if n_neurons is not None and (isinstance(n_neurons, bool) or not isinstance(n_neurons, int) or n_neurons < 1):
        raise WeightscopeError(f"n_neurons must be a positive integer or None, got {n_neurons!r}")
    loaded = model if isinstance(model, LoadedModel) else load_model(model, pretrained=pretrained, checkpoint=checkpoint)
    unknown = [s for s in sides if s not in SIDES]
    if unknown or not sides:
        raise WeightscopeError(f"sides must be a non-empty subset of {SIDES}, got {tuple(sides)}")
    if n_directions is not None and (not isinstance(n_directions, int) or n_directions < 1):
        raise WeightscopeError(f"n_directions must be a positive integer or None, got {n_directions!r}")
    bundled = loaded.name == "shapes-vit"  # the shapes-world architecture, shipped or edited
    if vocabulary is None:
        vocabulary = BUNDLED_VOCAB if bundled else GENERAL_VOCAB
    if normalize is None:
        normalize = "l2" if bundled else "splice"
    concepts, vocab_desc = parse_vocabulary_spec(vocabulary)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(concepts):
        raise WeightscopeError(f"k = {k} must be between 1 and the vocabulary size ({len(concepts)})")

    compute = as_compute(compute)
    free_model = free_model or not isinstance(model, LoadedModel)  # a model loaded here is ours to release
    identity = loaded.identity
    # Memory: blocks are described one at a time, as they are explained (a float64 copy of a whole ViT-L/14
    # vision tower is 2.4 GB); bad indices are refused before the long work, from the first block alone.
    n_layers = describe_model(loaded, layers=()).n_layers
    layer_list = _select(layers, n_layers, "layer")
    head_list = _select(heads, describe_model(loaded, layers=layer_list[:1]).n_heads, "head")
    vision = _vision_digest(loaded) if "vo" in what else ""
    dictionary = embed_concepts(loaded.model, loaded.tokenizer, concepts, model_name=loaded.name,
                                normalize=normalize, cache_dir=cache_dir, progress=progress,
                                compute=None if compute.torch_device().type == "cpu" and compute.precision == "fp32"
                                else compute)
    if free_model:
        _release_text_tower(loaded)   # the concepts are embedded: the text tower is no longer needed
    reports: dict = {}
    if "vo" in what:
        key = run_key(model=identity, vision=vision, image_mean=array_digest(image_mean),
                      concepts=vocabulary_hash(concepts), dictionary=array_digest(dictionary),
                      layers=layer_list, heads=head_list, method=method, k=int(k), lam=float(lam),
                      n_directions=n_directions, sides=list(sides), joint_mode=joint_mode,
                      compute=[compute.device, compute.precision, compute.solver_backend()], version=__version__)
        store = LayerStore(Path(cache_dir) if cache_dir is not None else default_cache_dir(), key,
                           enabled=bool(resume) and len(layer_list) > 1)
        saved = {l: store.load(l) for l in layer_list}
        store.announce([l for l, v in saved.items() if v is not None], len(layer_list))
        for l in tqdm(layer_list, desc="explaining heads", unit="layer", disable=not progress):
            if saved[l] is None:
                layer_reports = _explain_layer(describe_model(loaded, layers=[l]), l, head_list, dictionary, concepts,
                                               method, k, lam, n_directions, sides, joint_mode, image_mean, compute,
                                               progress)
                store.save(l, [asdict(rep) for rep in layer_reports])
            else:
                layer_reports = [HeadReport(r["layer"], r["head"], r["s"], r["groups"],
                                            [Direction(**d) for d in r["directions"]], r["rank"]) for r in saved[l]]
            reports.update({(rep.layer, rep.head): rep for rep in layer_reports})
        store.finish()
    weights = describe_model(loaded, layers=layer_list) if ("qk" in what or "mlp" in what) else None
    if free_model:
        _release(loaded)
    del loaded
    settings = {"method": method, "k": int(k), "lam": float(lam), "joint_mode": joint_mode, "normalize": normalize,
                "image_mean": image_mean is not None, "sides": list(sides), "n_directions": n_directions,
                "what": list(what), "n_neurons": n_neurons}
    from .neurons import explain_neurons, explain_qk
    common = {"method": method, "k": k, "lam": lam, "joint_mode": joint_mode, "image_mean": image_mean,
              "progress": progress}
    qk = explain_qk(weights, dictionary, concepts, layers=layers, heads=heads, n_directions=n_directions,
                    **common) if "qk" in what else {}
    neurons = explain_neurons(weights, dictionary, concepts, layers=layers, n_neurons=n_neurons,
                              **common) if "mlp" in what else {}
    return Inspection(identity, vocab_desc, len(concepts), settings, reports, qk, neurons)


def _explain_layer(weights, l, head_list, dictionary, concepts, method, k, lam, n_directions, sides, joint_mode,
                   image_mean, compute, progress) -> list[HeadReport]:
    """HeadReports of the chosen heads of layer l: one explain call for every direction, side and sign."""
    svds = decompose_model(weights, layers=[l], heads=head_list, progress=False)
    keys, signals = [], []
    for (_, h), svd in svds.items():
        # only directions above rounding level are explained: a dead head (rank 0) gets none, and no theme
        r = svd.rank if n_directions is None else min(n_directions, svd.rank)
        for side in sides:
            vectors = svd.write if side == "write" else svd.read
            signals.append(to_joint(weights, vectors[:r], mode=joint_mode, image_mean=image_mean))
            keys.extend((h, side, i) for i in range(r))
    reports = {h: HeadReport(l, h, svd.s.tolist(), svd.groups, [], svd.rank) for (_, h), svd in svds.items()}
    if not keys:  # every chosen head may be dead: then there is nothing to explain
        return list(reports.values())
    result = explain(np.vstack(signals), dictionary, method=method, k=k, lam=lam, both_signs=True,
                     progress=False, backend=compute)
    plus, minus = result.split_signs()
    group_of = {(h, i): g for (_, h), svd in svds.items() for g in svd.groups for i in g}
    for row, (h, side, i) in enumerate(keys):
        for sign, ex in ((1, plus), (-1, minus)):
            reports[h].directions.append(explained_direction(ex, row, concepts, i, side, sign, group_of.get((h, i))))
    return list(reports.values())


def _release_text_tower(loaded) -> None:
    """Empty the text tower's tensors (the caller handed the model over): their memory is returned at once."""
    import torch

    oct_ = text_adapter(loaded.model)
    for _, t in oct_.text_tower_tensors(oct_._unwrap(loaded.model)):
        t.data = torch.empty(0, dtype=t.dtype)


def _vision_digest(loaded) -> str:
    """CRC-32s of every tensor outside the text tower, by name: what the vision weights' partial results depend on."""
    import torch

    oct_ = text_adapter(loaded.model)
    root = oct_._unwrap(loaded.model)
    text = {id(t) for _, t in oct_.text_tower_tensors(root)}
    items = [(n, t) for n, t in list(root.named_parameters()) + list(root.named_buffers()) if id(t) not in text]
    return ";".join(f"{n}:{array_digest(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())}"
                    for n, t in sorted(items, key=lambda x: x[0]))


def _release(loaded) -> None:
    """Empty every tensor of the model (the caller handed it over, and everything needed was read from it)."""
    import torch

    module = getattr(loaded, "model", loaded)
    for t in list(module.parameters()) + list(module.buffers()):
        t.data = torch.empty(0, dtype=t.dtype)


def image_mean_from_folder(loaded: LoadedModel, folder: str | Path, batch_size: int = 64,
                           max_images: int | None = None, progress: bool = True) -> np.ndarray:
    """Mean normalised image embedding (E,) of the images in ``folder`` (recursively), with the model's preprocessing.

    Use it as ``image_mean`` to correct for CLIP's modality gap (SITH used CC12M). Files are read in sorted order.
    """
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    folder = Path(folder)
    if not folder.is_dir():
        raise WeightscopeError(f"image folder not found: {folder}")
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts)[:max_images]
    if not files:
        raise WeightscopeError(f"no images (.jpg, .png, .bmp, .webp) found under {folder}")
    if loaded.preprocess is None:
        raise WeightscopeError("this model came without its preprocessing; load it by name or checkpoint")
    total = None
    for start in tqdm(range(0, len(files), batch_size), desc="image mean", disable=not progress):
        batch = torch.stack([loaded.preprocess(Image.open(p).convert("RGB")) for p in files[start:start + batch_size]])
        with torch.no_grad():
            emb = torch.nn.functional.normalize(encode_image(loaded, batch).double(), dim=-1).sum(0)
        total = emb if total is None else total + emb
    return (total / len(files)).numpy()
