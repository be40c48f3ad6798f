"""One concept explainer: a vocabulary, its embeddings under one model's text tower, and one solver setting.

Every analysis that explains a direction with concepts (head inspection, MLP neurons and query-key directions,
edit selection, SING, concept-based similarity, compare's labels) takes ``explainer=``; the command line builds one
from its shared options (``--vocab --method --k --lambda --normalize``). Built once, it embeds its vocabulary
once per model (the on-disk cache of :func:`weightscope.concepts.embed.embed_concepts` is kept too), so several
analyses of one model share one embedding.

Source of the method: SITH (seed 001; METHODS.md section 5): COMP, a coherent non-negative pursuit over a
vocabulary embedded by the model's own text tower.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..core.errors import WeightscopeError
from .embed import NORMALIZATIONS, embed_concepts, normalize_embeddings
from .solvers import METHODS, Explanation, explain
from .vocab import parse_vocabulary_spec

#: the solver defaults of every analysis (SITH's setting: COMP with 5 atoms and coherence weight 0.3)
DEFAULT_METHOD = "comp"
DEFAULT_K = 5
DEFAULT_LAM = 0.3


@dataclass(frozen=True)
class ConceptExplainer:
    """Explains joint-space directions as sparse sets of concepts.

    vocabulary: a spec (``"shapes_world,general:5000"``, a built-in name, a file) or a sequence of concept strings;
        None leaves the choice to the analysis, which knows its default for the model (``with_defaults``).
    method: "topk" | "mp" | "omp" | "nnomp" | "comp" (``weightscope.concepts.solvers.explain``).
    k: concepts per direction (1 <= k <= vocabulary size). lam: COMP's coherence weight (>= 0).
    normalize: "none" | "l2" | "splice" (the concept embeddings; SpLiCE subtracts the vocabulary mean); None leaves
        it to the analysis. cache_dir: the embedding cache (None: ``$WEIGHTSCOPE_CACHE_DIR`` or the user cache).
    device ("cpu", "cuda", "mps", "auto"), precision ("fp32", "bf16", "fp16"), backend ("numba", "torch", None =
        numba on the CPU, torch elsewhere): where the concepts are embedded and the solvers run (METHODS.md s.14;
        ``weightscope.core.compute.Compute``).
    Raises WeightscopeError (one line) for an unknown method or normalisation, k < 1 or lam < 0.
    """

    vocabulary: str | Sequence[str] | None = None
    method: str = DEFAULT_METHOD
    k: int = DEFAULT_K
    lam: float = DEFAULT_LAM
    normalize: str | None = None
    cache_dir: str | Path | None = None
    device: str = "cpu"
    precision: str = "fp32"
    backend: str | None = None
    # parsed vocabularies and embeddings, keyed by vocabulary (and model): shared with with_defaults' copies
    _embedded: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.method not in METHODS:
            raise WeightscopeError(f"method {self.method!r}; use one of {', '.join(METHODS)}")
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise WeightscopeError(f"k = {self.k!r} must be a positive integer")
        if not float(self.lam) >= 0.0:
            raise WeightscopeError(f"lambda = {self.lam!r} must be >= 0")
        if self.normalize is not None and self.normalize not in NORMALIZATIONS:
            raise WeightscopeError(f"normalize={self.normalize!r}; use one of {', '.join(NORMALIZATIONS)}")
        self.compute  # checks device, precision and backend
        if self.vocabulary is not None and not isinstance(self.vocabulary, str):
            object.__setattr__(self, "vocabulary", tuple(self.vocabulary))

    def with_defaults(self, vocabulary, normalize: str) -> ConceptExplainer:
        """This explainer with an analysis's defaults filled in where it left the choice open (None); the
        embeddings already computed are shared with the copy."""
        if self.vocabulary is not None and self.normalize is not None:
            return self
        out = replace(self, vocabulary=self.vocabulary if self.vocabulary is not None else vocabulary,
                      normalize=self.normalize if self.normalize is not None else normalize)
        object.__setattr__(out, "_embedded", self._embedded)
        return out

    @property
    def compute(self):
        """The device, precision and backend as one ``weightscope.core.compute.Compute``."""
        from ..core.compute import Compute

        return Compute(self.device, self.precision, self.backend)

    def _embed_compute(self):
        # None (the text tower where the model is, in fp32) for the CPU default: the embedding cache is shared
        c = self.compute
        return None if c.precision == "fp32" and c.torch_device().type == "cpu" else c

    @property
    def concepts(self) -> list[str]:
        """The vocabulary's concepts, in order (parsed once)."""
        return self._parsed()[0]

    @property
    def description(self) -> str:
        """How the vocabulary was given ("shapes_world,general:5000", "custom list" ...)."""
        return self._parsed()[1]

    def _parsed(self) -> tuple[list[str], str]:
        if self.vocabulary is None:
            raise WeightscopeError("this explainer has no vocabulary yet; give one or call with_defaults")
        key = ("parsed", self.vocabulary)
        if key not in self._embedded:
            concepts, desc = parse_vocabulary_spec(self.vocabulary if isinstance(self.vocabulary, str)
                                                   else list(self.vocabulary))
            if self.k > len(concepts):
                raise WeightscopeError(f"k = {self.k} must be between 1 and the vocabulary size ({len(concepts)})")
            self._embedded[key] = (concepts, desc)
        return self._embedded[key]

    def check(self) -> ConceptExplainer:
        """Parse the vocabulary now (cheap), so a bad spec fails before any model is loaded; returns self."""
        self._parsed()
        return self

    def raw_embeddings(self, loaded, progress: bool = True) -> np.ndarray:
        """(M, E) float32 concept embeddings of the model's text tower, unnormalised; once per model."""
        key = (self.vocabulary, "none", id(loaded.model), loaded.identity, self.precision)
        if key not in self._embedded:
            self._embedded[key] = embed_concepts(loaded.model, loaded.tokenizer, self.concepts, normalize="none",
                                                 model_name=loaded.name, cache_dir=self.cache_dir,
                                                 progress=progress, compute=self._embed_compute())
        return self._embedded[key]

    def dictionary(self, loaded, progress: bool = True) -> np.ndarray:
        """(M, E) float32 concept embeddings normalised as ``normalize`` says (the solver's dictionary)."""
        if self.normalize is None:
            raise WeightscopeError("this explainer has no normalisation yet; give one or call with_defaults")
        key = (self.vocabulary, self.normalize, id(loaded.model), loaded.identity, self.precision)
        if key not in self._embedded:
            self._embedded[key] = embed_concepts(loaded.model, loaded.tokenizer, self.concepts,
                                                 normalize=self.normalize, model_name=loaded.name,
                                                 cache_dir=self.cache_dir, progress=progress,
                                                 compute=self._embed_compute())
        return self._embedded[key]

    def normalized(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` embeddings normalised as this explainer says (for dictionaries built outside ``dictionary``)."""
        return normalize_embeddings(raw, self.normalize)

    def explain(self, signals, dictionary, *, both_signs: bool = False, coherence_dictionary=None,
                progress=None) -> Explanation:
        """The sparse explanations (``weightscope.concepts.solvers.explain``) of signals (B, E) by ``dictionary``
        (M, E) with this explainer's method, k and lambda."""
        return explain(signals, dictionary, method=self.method, k=self.k, lam=self.lam, both_signs=both_signs,
                       coherence_dictionary=coherence_dictionary, progress=progress, backend=self.compute)

    def settings(self) -> dict:
        """The solver settings as results record them."""
        return {"method": self.method, "k": int(self.k), "lam": float(self.lam), "normalize": self.normalize}
