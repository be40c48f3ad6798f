"""Whole checkpoints: specs, loading, the base prepared once, and one comparison per tuned checkpoint."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ...decompose.head_svd import HeadSVD, decompose_model, head_factors
from ...core.defaults import CHECKPOINT_SUFFIXES, COMPARE_DEFAULTS, SPEC_HELP
from ...core.errors import WeightscopeError
from ...core.weights import VisionWeights
from .labels import label_comparison
from . import mlp
from .matching import compare_heads
from .noise import rounding_noise, rounding_scale, storage_precision
from .results import EPSILONS, Comparison

DEFAULTS = COMPARE_DEFAULTS
DECOMPOSE_OPTIONS = ("layers", "heads", "kind", "fold_ln", "center_write", "rtol")
#: what can be compared: the heads' value-output or query-key matrices, or each block's MLP write matrix
MATRIX_KINDS = ("vo", "qk", "mlp")


def check_kind(kind: str) -> str:
    """``kind`` if it names a comparable matrix kind (``decompose.KINDS``), else a one-line WeightscopeError."""
    if kind not in MATRIX_KINDS:
        raise WeightscopeError(f"unknown matrix kind {kind!r} to compare: expected one of {', '.join(MATRIX_KINDS)} "
                               "(vo: value-output, qk: query-key, mlp: MLP write matrices)")
    return kind


def check_bilinear(weights: VisionWeights, layers=None) -> None:
    """Refuse "qk" before any work when a chosen layer normalises queries and keys (QK-norm, cosine attention)."""
    chosen = range(weights.n_layers) if layers is None else ([layers] if isinstance(layers, int) else layers)
    for l in chosen:
        if 0 <= l < weights.n_layers and not weights.layers[l].attn.dot_product_logits:
            raise WeightscopeError(
                f"layer {l} normalises queries and keys (QK-norm or scaled cosine attention), so its logits are not "
                "the bilinear form x W_QK y^T: compare its 'vo' matrices instead (or leave the layer out)")


def check_settings(**options) -> dict:
    """DEFAULTS updated with ``options`` (threshold names only), validated; raises WeightscopeError before any work."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise WeightscopeError(f"unknown comparison option(s) {unknown}; expected some of {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    if not 0.0 < cfg["cos_threshold"] <= 1.0:
        raise WeightscopeError(f"cos_threshold must be in (0, 1], got {cfg['cos_threshold']}")
    for name in ("ratio_tol", "change_tol", "tie_factor", "noise_factor"):
        if not cfg[name] >= 0:
            raise WeightscopeError(f"{name} must be >= 0, got {cfg[name]}")
    if not 0.0 < cfg["epsilon"] <= 1.0:
        raise WeightscopeError(f"epsilon must be in (0, 1], got {cfg['epsilon']}")
    if int(cfg["top_k"]) < 1:
        raise WeightscopeError(f"top_k must be >= 1, got {cfg['top_k']}")
    cfg = {k: float(v) for k, v in cfg.items()}
    cfg["top_k"] = int(cfg["top_k"])
    cfg["max_angle"] = math.degrees(math.acos(cfg["cos_threshold"]))
    cfg["epsilons"] = list(EPSILONS)
    return cfg


def architecture(weights: VisionWeights) -> dict:
    """The structural facts two comparable vision towers share."""
    return {"model family": weights.family, "layer count": weights.n_layers, "width": weights.width,
            "heads per layer": weights.n_heads,
            "head width": weights.layers[0].attn.head_width if weights.layers else 0,
            "embedding width": weights.embed_dim}


def check_same_architecture(base, tuned) -> None:
    """Raise a WeightscopeError naming the first structural difference (VisionWeights or ``architecture`` dicts)."""
    a = base if isinstance(base, dict) else architecture(base)
    b = tuned if isinstance(tuned, dict) else architecture(tuned)
    for what in a:
        if a[what] != b[what]:
            raise WeightscopeError(f"checkpoints have different architectures: {what} {a[what]} vs {b[what]} "
                                   "(base vs tuned); compare checkpoints of the same model")


def decompose(weights: VisionWeights, options: dict, progress: bool = True) -> dict[tuple[int, int], HeadSVD]:
    """The HeadSVDs a comparison matches: ``decompose_model`` for "vo" / "qk", ``mlp.decompose_mlps`` for "mlp".

    options: ``DECOMPOSE_OPTIONS`` (kind default "vo"). "qk" is refused before any work on non-bilinear layers.
    """
    options = dict(options)
    kind = check_kind(options.pop("kind", "vo"))
    if kind == "mlp":
        return mlp.decompose_mlps(weights, progress=progress, **options)
    if kind == "qk":
        check_bilinear(weights, options.get("layers"))
    return decompose_model(weights, kind=kind, progress=progress, **options)


@dataclass
class PreparedBase:
    """What every comparison with one base needs, made once (small enough to ship to workers).

    name: the base's identity; arch: ``architecture(base)``; options: decomposition options; svds: the base's
    HeadSVDs; scales: per head ``noise.rounding_scale`` of its factors; precision: (name, unit roundoff).
    """

    name: str
    arch: dict
    options: dict
    svds: dict[tuple[int, int], HeadSVD]
    scales: dict[tuple[int, int], float]
    precision: tuple[str, float]


def prepare_base(weights: VisionWeights, name: str = "base", *, layers=None, heads=None, kind: str = "vo",
                 fold_ln: bool = False, center_write: bool = False, rtol: float = 1e-3,
                 progress: bool = True) -> PreparedBase:
    """Decompose the base once (``decompose_model`` options) and measure its storage precision and rounding scales.

    kind: "vo" (value-output) or "qk" (query-key; W_QK = W_Q W_K^T, read = query, write = key directions): both
    are factored A (D, dh) @ B (dh, D); "mlp": each block's MLP write matrix as the unit (layer, 0) (see
    :mod:`.mlp`). Matching, verdicts, noise floor and intruders are the same code for all three.
    Raises WeightscopeError for another kind, "qk" on a layer whose logits are not bilinear, heads with "mlp".
    """
    check_kind(kind)
    opts = dict(layers=layers, heads=heads, kind=kind, fold_ln=fold_ln, center_write=center_write, rtol=rtol)
    svds = decompose(weights, opts, progress)
    if kind == "mlp":
        scales = {key: mlp.rounding_scale(weights, key[0], center_write) for key in svds}
    else:
        scales = {key: rounding_scale(*head_factors(weights, *key, kind=kind, fold_ln=fold_ln,
                                                    center_write=center_write))
                  for key in svds}
    return PreparedBase(name, architecture(weights), opts, svds, scales, storage_precision(weights, kind))


def compare_decompositions(base_svds, tuned_svds, *, base_name="base", tuned_name="tuned", noise=None,
                           settings: dict | None = None, progress: bool = True, **options) -> Comparison:
    """Compare two ``decompose_model`` results head by head (the same keys). noise: {key: expected rounding
    ||dW||_F} (default 0: exact checkpoints); options: thresholds (``DEFAULTS``); settings: recorded extras."""
    cfg = check_settings(**options)
    if set(base_svds) != set(tuned_svds):
        only = sorted(set(base_svds) ^ set(tuned_svds))[:3]
        raise WeightscopeError(f"the two decompositions cover different heads (e.g. {only}); decompose the same "
                               "layers and heads of both checkpoints")
    first = next(iter(base_svds.values()), None)
    shape = ({"width": int(first.read.shape[1]), "rank": int(first.s.size), "kind": first.kind}
             if first is not None else {})
    result = Comparison(base_name, tuned_name, {**cfg, **shape, **(settings or {})})
    noise = noise or {}
    with threadpool_limits(limits=1, user_api="blas"):  # r x r problems: threads only add overhead
        for key in tqdm(sorted(base_svds), desc="compare heads", unit="head", disable=not progress):
            result.heads[key] = compare_heads(
                base_svds[key], tuned_svds[key], cfg["cos_threshold"], cfg["ratio_tol"], cfg["change_tol"],
                cfg["tie_factor"], noise.get(key, 0.0), cfg["noise_factor"], cfg["top_k"])
    return result


def compare_with_base(prepared: PreparedBase, tuned: VisionWeights, tuned_name: str = "tuned",
                      progress: bool = True, **options) -> Comparison:
    """Compare a tuned tower with a prepared base; options: thresholds (``DEFAULTS``)."""
    check_settings(**options)
    check_same_architecture(prepared.arch, tuned)
    kind = prepared.options.get("kind", "vo")
    tuned_svds = decompose(tuned, prepared.options, progress)
    precision = storage_precision(tuned, kind)
    noise = {key: rounding_noise(scale, prepared.precision[1], precision[1]) for key, scale in prepared.scales.items()}
    extras = {**{k: v for k, v in prepared.options.items() if k not in ("layers", "heads")},
              "precision_base": prepared.precision[0], "precision_tuned": precision[0]}
    return compare_decompositions(prepared.svds, tuned_svds, base_name=prepared.name, tuned_name=tuned_name,
                                  noise=noise, settings=extras, progress=progress, **options)


def split_options(options: dict) -> tuple[dict, dict]:
    """(decomposition options, threshold options) of a mixed keyword dict; unknown keys -> WeightscopeError."""
    unknown = sorted(set(options) - set(DEFAULTS) - set(DECOMPOSE_OPTIONS))
    if unknown:
        raise WeightscopeError(f"unknown comparison option(s) {unknown}; expected some of "
                               f"{sorted(DEFAULTS) + list(DECOMPOSE_OPTIONS)}")
    return ({k: v for k, v in options.items() if k in DECOMPOSE_OPTIONS},
            {k: v for k, v in options.items() if k in DEFAULTS})


def compare_weights(base: VisionWeights, tuned: VisionWeights, *, base_name: str | None = None,
                    tuned_name: str | None = None, progress: bool = True, **options) -> Comparison:
    """Compare the value-output (kind="vo", default) or query-key ("qk") matrices of two neutral descriptions of the
    same architecture.

    options: decomposition options (layers, heads, kind, fold_ln, center_write, rtol; keep fold_ln / center_write False
    to use labels from ``inspect_model``) and thresholds (``DEFAULTS``).
    """
    dec, thr = split_options(options)
    check_settings(**thr)
    check_same_architecture(base, tuned)
    prepared = prepare_base(base, base_name or base.meta.get("name", "base"), progress=progress, **dec)
    return compare_with_base(prepared, tuned, tuned_name or tuned.meta.get("name", "tuned"), progress=progress, **thr)


# --------------------------------------------------------------------------------------------------- specs



def name_and_path(spec: str) -> tuple[str, str] | None:
    """(NAME, PATH) when ``spec`` is NAME:PATH (a checkpoint file of architecture NAME), else None."""
    name, sep, rest = spec.partition(":")
    if sep and name and rest and not Path(spec).exists() and not spec.startswith(("hf-hub:", "local-dir:")) and (
            Path(rest).exists() or rest.lower().endswith(CHECKPOINT_SUFFIXES)):
        return name, rest
    return None


def parse_checkpoint_spec(spec: str, model: str | None = None) -> dict:
    """Turn a checkpoint spec into ``load_model`` arguments {"model", "pretrained", "checkpoint"} (see SPEC_HELP).

    model: the architecture for a bare file path (default: none; NAME:PATH names it in the spec itself).
    """
    from ...models.load import BUNDLED

    if not isinstance(spec, str) or not spec.strip():
        raise WeightscopeError(f"empty checkpoint spec {spec!r}. {SPEC_HELP}")
    spec = spec.strip()
    if spec == BUNDLED or spec.startswith(BUNDLED + ":"):
        return {"model": BUNDLED, "pretrained": spec.partition(":")[2] or "base", "checkpoint": None}
    if (named := name_and_path(spec)) is not None:
        return {"model": named[0], "pretrained": None, "checkpoint": named[1]}
    if Path(spec).is_file() or spec.lower().endswith(CHECKPOINT_SUFFIXES):
        from ...models.checkpoints import architecture as sidecar_architecture, read_sidecar

        if model is None and Path(spec).is_file() and sidecar_architecture(read_sidecar(spec)):
            return {"model": spec, "pretrained": None, "checkpoint": None}  # weightscope wrote it: loads by path
        if model is None:
            raise WeightscopeError(f"checkpoint file {spec} needs its architecture: write NAME:{spec} "
                                   "(NAME: the open_clip model name it was trained with)")
        return {"model": model, "pretrained": None, "checkpoint": spec}
    if spec.startswith(("hf-hub:", "local-dir:")):
        return {"model": spec, "pretrained": None, "checkpoint": None}
    name, sep, tag = spec.partition(":")
    if sep and not (name and tag):
        raise WeightscopeError(f"bad checkpoint spec {spec!r}: write NAME:TAG. {SPEC_HELP}")
    return {"model": name, "pretrained": tag or None, "checkpoint": None}


@dataclass(frozen=True)
class SpecLoading:
    """How checkpoint specs become loaded models.

    trust_checkpoint: unpickle torch files in full (as ``load_model``; never by default). load: the loader, with
    ``weightscope.models.load.load_model``'s signature (default that function; ``weightscope.bundled.load_model``
    adds the bundled model). model: the architecture of bare checkpoint paths (default: the base's). named_files:
    {tag: file} of the checkpoints a "bundled:TAG" spec names, so that
    saved results are keyed by the file's content.
    """

    trust_checkpoint: bool = False
    load: Callable | None = None
    model: str | None = None
    named_files: Mapping[str, str] = field(default_factory=dict)


def load_checkpoint(spec: str, model: str | None = None, loading: SpecLoading | None = None):
    """``load_model`` for a checkpoint spec (see :func:`parse_checkpoint_spec`); returns a LoadedModel.
    loading: how specs are loaded (:class:`SpecLoading`; default: ``load_model``, nothing unpickled in full)."""
    from ...models.load import BUNDLED, load_model

    loading = loading or SpecLoading()
    load = loading.load or load_model
    args = parse_checkpoint_spec(spec, model)
    if args["model"] == BUNDLED:
        return load(BUNDLED, pretrained=args["pretrained"])
    return load(args["model"], pretrained=args["pretrained"], checkpoint=args["checkpoint"],
                trust_checkpoint=loading.trust_checkpoint)


def architecture_of(loaded) -> str:
    """The architecture name to use for bare checkpoint paths compared with ``loaded``."""
    return loaded.name


def compare_models(base, tuned, *, model: str | None = None, base_inspection=None, tuned_inspection=None,
                   progress: bool = True, loading: SpecLoading | None = None, **options) -> Comparison:
    """Compare two checkpoints given as LoadedModels, open_clip modules or specs (see :data:`SPEC_HELP`).

    model: architecture for bare checkpoint paths (default: the base's). loading: how specs are loaded
    (:class:`SpecLoading`). options: as :func:`compare_weights`.
    base_inspection / tuned_inspection: optional ``inspect_model`` results for :func:`label_comparison`.
    """
    from ...models.adapters import describe_model
    from ...models.load import LoadedModel, load_model

    split_options(options)
    if (base_inspection is not None or tuned_inspection is not None) and options.get("kind", "vo") != "vo":
        raise WeightscopeError(f"concept labels explain value-output directions; kind {options['kind']!r} cannot "
                               "be labelled: compare 'vo' to label, or pass no inspections")

    def resolve(x, arch):
        if isinstance(x, LoadedModel):
            return x
        if isinstance(x, str):
            return load_checkpoint(x, arch, loading)
        return load_model(x)

    base_loaded = resolve(base, model)
    tuned_loaded = resolve(tuned, model or architecture_of(base_loaded))
    result = compare_weights(describe_model(base_loaded), describe_model(tuned_loaded),
                             base_name=base_loaded.identity, tuned_name=tuned_loaded.identity,
                             progress=progress, **options)
    if base_inspection is not None or tuned_inspection is not None:
        label_comparison(result, base_inspection, tuned_inspection)
    return result
