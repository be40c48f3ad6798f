"""Head inspection: what does each attention head write and read? (load -> decompose -> embed -> explain)

    from weightscope import inspect_model
    result = inspect_model()                      # the bundled shapes-world model, default vocabulary
    print(result.summary())
    result[5, 2].direction(0).concepts            # top write direction of layer 5, head 2, explained
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tqdm.auto import tqdm

from ..models.adapters import describe_model, encode_image, head_count, text_adapter
from ..decompose.head_svd import _select, decompose_model
from ..concepts.embed import default_cache_dir, vocabulary_hash
from ..concepts.explainer import ConceptExplainer
from ..concepts.solvers import shared_gram_rows
from ..core.version import __version__
from .resume import LayerStore, array_digest, run_key
from ..core.compute import return_freed_memory
from ..core.errors import WeightscopeError
from ..core.fileio import dump_json, parse_json
from ..decompose.joint import to_joint
from ..models.lazy import ensure_blocks, recipe_of, release_blocks, unbuilt
from ..models.load import LoadedModel, load_model
from .directions import (COEFFICIENT_DECIMALS, NO_CONCEPT, Direction, HeadReport,  # noqa: F401  (part of this
                         explained_direction, format_coefficient)                     # module's API)

SIDES = ("write", "read")
WHAT = ("vo", "qk", "mlp")  # what inspect_model can explain: value-output, query-key, MLP neurons
GENERAL_VOCAB = "general"


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


def parse_what(what) -> tuple[str, ...]:
    """What to explain, from "vo,qk,mlp" or a sequence: a non-empty tuple of names in WHAT, duplicates dropped."""
    items = what.split(",") if isinstance(what, str) else list(what)
    items = tuple(dict.fromkeys(str(w).strip() for w in items))
    if not items or any(w not in WHAT for w in items):
        raise WeightscopeError(f"what to explain must be a comma list of {', '.join(WHAT)}, got {what!r}")
    return items


def inspect_model(
    model,
    explainer: ConceptExplainer | None = None,
    *,
    layers=None,
    heads=None,
    n_directions: int | None = None,
    sides: tuple[str, ...] = SIDES,
    image_mean: np.ndarray | None = None,
    joint_mode: str = "linear",
    what=("vo",),
    n_neurons: int | None = None,
    progress: bool = True,
    resume: bool = True,
) -> Inspection:
    """Explain the singular directions of chosen heads with concepts from a vocabulary (SITH, seed 001, section 3).

    model: a LoadedModel, an open_clip module, or a name (``weightscope.models.load.load_model``); the top-level
    ``weightscope.inspect_model`` also takes None for the bundled shapes-world model. explainer: a
    ``ConceptExplainer`` (vocabulary, solver, normalisation; default: vocabulary "general", COMP with k 5 and lambda
    0.3, SpLiCE normalisation). layers / heads: indices (default all). n_directions: explain only the leading
    directions of each head (default: all dh). sides: "write" and/or "read". image_mean (E,): modality-gap
    correction (see ``image_mean_from_folder``); default none. Each direction is explained with both signs. what:
    any of "vo" (value-output, the heads), "qk" (query-key directions, ``Inspection.qk``), "mlp" (MLP neurons,
    ``Inspection.neurons``; the leading ``n_neurons`` per layer by score, default all); see
    :mod:`weightscope.analyses.neurons`. Raises WeightscopeError (one line) for bad arguments, before the model
    is described.
    The explainer's device, precision and backend (``ConceptExplainer.compute``) say where the concepts are embedded
    and the solvers run. resume: a run over several layers saves each finished layer's heads under the cache dir
    and, rerun after an interruption with the same inputs, starts from there (it says so on stderr); False starts
    over. Memory: blocks are described one at a time; a model loaded here (given by name, built lazily: see
    :mod:`weightscope.models.lazy`) or a lazy model passed in has its text tower released once the concepts are
    embedded, and its vision blocks built and released one at a time.
    """
    what = parse_what(what)
    if n_neurons is not None and (isinstance(n_neurons, bool) or not isinstance(n_neurons, int) or n_neurons < 1):
        raise WeightscopeError(f"n_neurons must be a positive integer or None, got {n_neurons!r}")
    loaded = model if isinstance(model, LoadedModel) else load_model(model, lazy=True)
    unknown = [s for s in sides if s not in SIDES]
    if unknown or not sides:
        raise WeightscopeError(f"sides must be a non-empty subset of {SIDES}, got {tuple(sides)}")
    if n_directions is not None and (not isinstance(n_directions, int) or n_directions < 1):
        raise WeightscopeError(f"n_directions must be a positive integer or None, got {n_directions!r}")
    explainer = (explainer or ConceptExplainer()).with_defaults(GENERAL_VOCAB, "splice").check()
    concepts, vocab_desc = explainer.concepts, explainer.description

    compute = explainer.compute
    # loaded here from a name, or a lazy model (load_model(..., lazy=True), which is handed over by contract):
    # ours to release; a built module or LoadedModel the caller passes is theirs, and is left intact
    free_model = model is None or isinstance(model, str) or unbuilt(loaded)
    identity = loaded.identity
    vision = _vision_digest(loaded) if "vo" in what else ""  # before any block is built: see _vision_digest
    # Memory: blocks are built (lazy models), described and explained one at a time (a float64 copy of a whole
    # ViT-L/14 vision tower is 2.4 GB); bad indices are refused before the long work, from the modules alone.
    n_layers = describe_model(loaded, layers=()).n_layers
    layer_list = _select(layers, n_layers, "layer")
    head_list = _select(heads, head_count(loaded, layer_list[0]), "head")
    dictionary = explainer.dictionary(loaded, progress)
    if free_model:
        _release_text_tower(loaded)   # the concepts are embedded: the text tower is no longer needed
        loaded.tokenizer = None       # nor the tokenizer (its BPE tables: 21 MB for open_clip's)
        return_freed_memory()
    reports: dict = {}
    if "vo" in what:
        key = run_key(model=identity, vision=vision, image_mean=array_digest(image_mean),
                      concepts=vocabulary_hash(concepts), dictionary=array_digest(dictionary),
                      layers=layer_list, heads=head_list, solver=explainer.settings(),
                      n_directions=n_directions, sides=list(sides), joint_mode=joint_mode,
                      compute=[compute.device, compute.precision, compute.solver_backend()], version=__version__)
        store = LayerStore(Path(explainer.cache_dir) if explainer.cache_dir is not None else default_cache_dir(), key,
                           enabled=bool(resume) and len(layer_list) > 1)
        saved = {l: store.load(l) for l in layer_list}
        store.announce([l for l, v in saved.items() if v is not None], len(layer_list))
        with shared_gram_rows():   # the layers' calls share the dictionary's Gram rows (results unchanged)
            for l in tqdm(layer_list, desc="explaining heads", unit="layer", disable=not progress):
                if saved[l] is None:
                    ensure_blocks(loaded, [l])
                    layer_reports = _explain_layer(describe_model(loaded, layers=[l]), l, head_list, dictionary,
                                                   explainer, n_directions, sides, joint_mode, image_mean)
                    store.save(l, [asdict(rep) for rep in layer_reports])
                    if free_model:
                        release_blocks(loaded, [l])   # a lazy model's block is rebuilt, equal, if asked for again
                        return_freed_memory()
                else:
                    layer_reports = [HeadReport(r["layer"], r["head"], r["s"], r["groups"],
                                                [Direction(**d) for d in r["directions"]], r["rank"])
                                     for r in saved[l]]
                reports.update({(rep.layer, rep.head): rep for rep in layer_reports})
        store.finish()
    weights = None
    if "qk" in what or "mlp" in what:
        ensure_blocks(loaded, layer_list)
        weights = describe_model(loaded, layers=layer_list)
    if free_model:
        _release(loaded)
    del loaded
    settings = {**explainer.settings(), "joint_mode": joint_mode, "image_mean": image_mean is not None,
                "sides": list(sides), "n_directions": n_directions,
                "what": list(what), "n_neurons": n_neurons}
    from .neurons import explain_neurons, explain_qk
    common = {"joint_mode": joint_mode, "image_mean": image_mean, "progress": progress}
    qk = explain_qk(weights, dictionary, explainer, layers=layers, heads=heads, n_directions=n_directions,
                    **common) if "qk" in what else {}
    neurons = explain_neurons(weights, dictionary, explainer, layers=layers, n_neurons=n_neurons,
                              **common) if "mlp" in what else {}
    return Inspection(identity, vocab_desc, len(concepts), settings, reports, qk, neurons)


def _explain_layer(weights, l, head_list, dictionary, explainer, n_directions, sides, joint_mode,
                   image_mean) -> list[HeadReport]:
    """HeadReports of the chosen heads of layer l: one explain call for every direction, side and sign."""
    device = explainer.compute.torch_device()
    # off the CPU, the heads' factored SVDs run as one batched call on the device (equal to rounding)
    svds = decompose_model(weights, layers=[l], heads=head_list, progress=False,
                           device=None if device.type == "cpu" else device)
    keys, signals = [], []
    for (_, h), svd in svds.items():
        # only directions above rounding level are explained: a dead head (rank 0) gets none, and no theme
        r = svd.rank if n_directions is None else min(n_directions, svd.rank)
        for side in sides:
            vectors = svd.write if side == "write" else svd.read
            signals.append(to_joint(weights, vectors[:r], mode=joint_mode, image_mean=image_mean))
            keys.extend((h, side, i) for i in range(r))
    del weights   # the block's float64 copy (57 MB for ViT-B, 100 MB for ViT-L) is not needed by the solver
    reports = {h: HeadReport(l, h, svd.s.tolist(), svd.groups, [], svd.rank) for (_, h), svd in svds.items()}
    if not keys:  # every chosen head may be dead: then there is nothing to explain
        return list(reports.values())
    result = explainer.explain(np.vstack(signals), dictionary, both_signs=True, progress=False)
    concepts = explainer.concepts
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
    """CRC-32s of every built tensor outside the text tower, by name: what the vision weights' partial results
    depend on. A random-init model's unbuilt blocks (lazy) are a function of its recipe, which is included."""
    import torch

    oct_ = text_adapter(loaded.model)
    root = oct_._unwrap(loaded.model)
    text = {id(t) for _, t in oct_.text_tower_tensors(root)}
    items = [(n, t) for n, t in list(root.named_parameters()) + list(root.named_buffers())
             if id(t) not in text and not t.is_meta]
    recipe = recipe_of(loaded)
    return ";".join([recipe.description() if recipe is not None else ""] + [
        f"{n}:{array_digest(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())}"
        for n, t in sorted(items, key=lambda x: x[0])])


def _release(loaded) -> None:
    """Empty every tensor of the model (the caller handed it over, and everything needed was read from it)."""
    import torch

    module = getattr(loaded, "model", loaded)
    for t in list(module.parameters()) + list(module.buffers()):
        if not t.is_meta:   # a lazy model's unbuilt tensors hold no memory
            t.data = torch.empty(0, dtype=t.dtype)


def image_mean_from_folder(loaded: LoadedModel, folder: str | Path, batch_size: int = 64,
                           max_images: int | None = None, progress: bool = True) -> np.ndarray:
    """Mean normalised image embedding (E,) of the images in ``folder`` (recursively), with the model's preprocessing.

    Use it as ``image_mean`` to correct for CLIP's modality gap (SITH used CC12M). Files are read in sorted order.
    """
    import torch
    from tqdm.auto import tqdm

    from ..core.images import list_images, read_image

    files = list_images(folder)[:max_images]
    if loaded.preprocess is None:
        raise WeightscopeError("this model came without its preprocessing; load it by name or checkpoint")
    total = None
    for start in tqdm(range(0, len(files), batch_size), desc="image mean", disable=not progress):
        batch = torch.stack([loaded.preprocess(read_image(p)) for p in files[start:start + batch_size]])
        with torch.no_grad():
            emb = torch.nn.functional.normalize(encode_image(loaded, batch).double(), dim=-1).sum(0)
        total = emb if total is None else total + emb
    return (total / len(files)).numpy()
