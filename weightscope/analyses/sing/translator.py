"""SING's translator T: a classifier's penultimate features (F,) -> a vision-language image-embedding space (E,).

Source: SING (METHODS.md section 8): angles between a classifier's equivalent features are taken after a map
into a CLIP-like space, fitted on paired images (ridge regression, or a small 3-4 layer MLP). Three kinds:

- "linear": the affine map T(f) = f @ M + c, M (F, E), c (E,), fitted by scikit-learn's ``RidgeCV`` (penalty by
  efficient leave-one-out cross-validation over :data:`DEFAULT_ALPHAS`, or the ``alphas`` given). Null-space moves
  of the classifier map exactly to the subspace row(N @ M) of E, which the closed-form steering uses.
- "mlp": scikit-learn's ``MLPRegressor`` (relu hidden layers, identity output), seeded; forward pass,
  vector-Jacobian and Jacobian-vector products are evaluated here in numpy from its ``coefs_`` / ``intercepts_``.
- "identity": T(f) = f (a CLIP zero-shot head, whose features already are image embeddings).

Embeddings are used as given: callers pass unit-normalised CLIP image embeddings (T is then fitted to the sphere's
points, and its outputs are close to, not exactly, unit length; every score is an angle, so scale is irrelevant).

Fit quality is measured on a seeded held-out split (:class:`FitReport`); the returned translator is then refitted on
all n pairs with the same settings (for "linear" the penalty chosen on the training split), so the report
describes a fit on fewer pairs than the final one: a slightly pessimistic estimate.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...core.errors import WeightscopeError

KINDS = ("linear", "mlp", "identity")
#: Ridge penalties tried by default: 25 values, 1e-6 .. 1e6 (log-spaced); the penalty is chosen by RidgeCV's
#: efficient leave-one-out cross-validation (mean squared error over all output dimensions).
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-6, 6, 25))
FORMAT = "weightscope-sing-translator/1"
MIN_TRAIN, MIN_TEST = 3, 2      # leave-one-out needs >= 3 pairs; a held-out R^2 needs >= 2


@dataclass(frozen=True)
class FitReport:
    """How well a translator fits, on held-out pairs.

    kind: "linear" or "mlp"; n_train / n_test: pairs in the split (seeded); alpha: the ridge penalty chosen by
    cross-validation on the training split (None for "mlp"); mean_cosine: mean cos(T(f), e) over the held-out
    pairs; r2: held-out ``sklearn.metrics.r2_score`` with multioutput="variance_weighted" (1 - total squared error
    / total variance over all E dimensions); n_iter: MLP training epochs (None for "linear"); in_width F,
    out_width E. The returned translator is refitted on all n_train + n_test pairs.
    """

    kind: str
    n_train: int
    n_test: int
    alpha: float | None
    mean_cosine: float
    r2: float
    n_iter: int | None
    in_width: int
    out_width: int


class Translator:
    """A map T from features (F,) to embeddings (E,); see the module docstring for the kinds.

    linear: ``weights = [M (F, E)]``, ``biases = [c (E,)]``; mlp: one weight / bias per layer (relu between layers,
    identity output); identity: no arrays, ``width`` given. Call with (F,) or (n, F) -> float64 (E,) or (n, E).
    """

    def __init__(self, kind: str, weights=(), biases=(), width: int | None = None, report: FitReport | None = None,
                 provenance: dict | None = None):
        if kind not in KINDS:
            raise WeightscopeError(f"translator kind {kind!r}; use one of {', '.join(KINDS)}")
        self.kind = kind
        self.weights = [np.asarray(w, dtype=np.float64) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float64) for b in biases]
        if kind == "identity":
            if width is None or int(width) < 1 or self.weights:
                raise WeightscopeError("an identity translator needs a positive width and no arrays")
            self._width = int(width)
        else:
            n_layers = len(self.weights)
            if n_layers == 0 or len(self.biases) != n_layers or (kind == "linear" and n_layers != 1):
                raise WeightscopeError(f"a {kind} translator needs matching weights and biases "
                                       f"(got {n_layers} weights, {len(self.biases)} biases)")
            for i, (w, b) in enumerate(zip(self.weights, self.biases)):
                prev = self.weights[i - 1].shape[1] if i else w.shape[0]
                if w.ndim != 2 or b.shape != (w.shape[1],) or w.shape[0] != prev:
                    raise WeightscopeError(f"translator layer {i}: weight {w.shape} and bias {b.shape} do not chain")
                if not (np.isfinite(w).all() and np.isfinite(b).all()):
                    raise WeightscopeError(f"translator layer {i} holds NaN or infinite values")
        self.report = report
        # what T was fitted between (e.g. {"classifier": ..., "classifier_sha256": ..., "clip_model": ...}); saved
        # with it so that a translator is not reused for another classifier or CLIP model by mistake
        self.provenance = dict(provenance) if provenance else None

    @property
    def in_width(self) -> int:
        return self._width if self.kind == "identity" else self.weights[0].shape[0]

    @property
    def out_width(self) -> int:
        return self._width if self.kind == "identity" else self.weights[-1].shape[1]

    @property
    def linear_map(self) -> tuple[np.ndarray, np.ndarray]:
        """(M (F, E), c (E,)) of an affine translator (identity: I and 0). Raises WeightscopeError for an MLP."""
        if self.kind == "identity":
            return np.eye(self._width), np.zeros(self._width)
        if self.kind == "linear":
            return self.weights[0], self.biases[0]
        raise WeightscopeError("an MLP translator has no single linear map; use the gradient path")

    def _input(self, X, what: str = "features") -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim not in (1, 2) or X.shape[-1] != self.in_width:
            raise WeightscopeError(f"{what} of shape {X.shape}: the translator takes width {self.in_width}")
        if not np.isfinite(X).all():
            raise WeightscopeError(f"{what} hold NaN or infinite values")
        return X

    def _forward(self, X):
        """Output and the relu masks of the hidden layers (for the products below)."""
        masks = []
        h = X
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                masks.append(h > 0)
                h = np.where(masks[-1], h, 0.0)
        return h, masks

    def __call__(self, X) -> np.ndarray:
        X = self._input(X)
        return X.copy() if self.kind == "identity" else self._forward(X)[0]

    def vjp(self, f, g) -> np.ndarray:
        """Gradient of <T(f), g> with respect to f: g J_T(f). f (F,) or (n, F), g (E,) or (n, E) -> like f."""
        f = self._input(f)
        g = np.asarray(g, dtype=np.float64)
        out = g if self.kind == "identity" else self._vjp(self._forward(f)[1], g)
        return np.broadcast_to(out, f.shape).copy()

    def jvp(self, f, v) -> np.ndarray:
        """Directional derivative J_T(f) v. f, v (F,) or (n, F) -> (E,) or (n, E)."""
        f = self._input(f)
        v = np.asarray(v, dtype=np.float64)
        return v.copy() if self.kind == "identity" else self._jvp(self._forward(f)[1], v)

    def _vjp(self, masks, g):
        """g J_T at the point whose relu masks (from :meth:`_forward`) are given."""
        for i in range(len(self.weights) - 1, -1, -1):
            g = g @ self.weights[i].T
            if i:
                g = np.where(masks[i - 1], g, 0.0)
        return g

    def _jvp(self, masks, v):
        for i, w in enumerate(self.weights):
            v = v @ w
            if i < len(self.weights) - 1:
                v = np.where(masks[i], v, 0.0)
        return v


def identity_translator(width: int) -> Translator:
    """T(f) = f on R^width (a CLIP zero-shot head: its features already are image embeddings)."""
    if not isinstance(width, (int, np.integer)) or width < 1:
        raise WeightscopeError(f"identity translator width {width!r}; give a positive integer")
    return Translator("identity", width=int(width))


def _check_pairs(features, embeddings, kind, test_size):
    if kind not in ("linear", "mlp"):
        raise WeightscopeError(f"cannot fit a translator of kind {kind!r}; use 'linear' or 'mlp' "
                               "(or identity_translator(width))")
    X = np.asarray(features, dtype=np.float64)
    Y = np.asarray(embeddings, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2:
        raise WeightscopeError(f"features {X.shape} and embeddings {Y.shape} must be 2-D (pairs, width)")
    if X.shape[0] != Y.shape[0]:
        raise WeightscopeError(f"{X.shape[0]} feature rows but {Y.shape[0]} embedding rows; give one embedding "
                               "per feature (the same images, in the same order)")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise WeightscopeError("features or embeddings hold NaN or infinite values")
    if not isinstance(test_size, float) or not 0.0 < test_size < 1.0:
        raise WeightscopeError(f"test_size = {test_size!r}; give a fraction in (0, 1), e.g. 0.2")
    n = X.shape[0]
    n_test = int(np.ceil(test_size * n))       # as sklearn's train_test_split rounds a fractional test size
    if n - n_test < MIN_TRAIN or n_test < MIN_TEST:
        raise WeightscopeError(f"{n} pair{'s are' if n != 1 else ' is'} too few: the {test_size:g} held-out split "
                               f"needs >= {MIN_TEST} test and >= {MIN_TRAIN} training pairs; give more paired images")
    return X, Y


def _fit_once(X, Y, kind, alphas, alpha, seed, hidden, max_iter):
    """Fit one sklearn model; returns (Translator, chosen alpha, n_iter)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.neural_network import MLPRegressor

    if kind == "linear":
        if alpha is None:
            model = RidgeCV(alphas=np.asarray(alphas), fit_intercept=True).fit(X, Y)
            alpha = float(model.alpha_)
        else:
            model = Ridge(alpha=alpha, fit_intercept=True).fit(X, Y)
        return Translator("linear", [model.coef_.T], [np.broadcast_to(model.intercept_, (Y.shape[1],))]), alpha, None
    model = MLPRegressor(hidden_layer_sizes=tuple(hidden), activation="relu", random_state=seed, max_iter=max_iter)
    with warnings.catch_warnings():
        # an unconverged fit is still a fit: its held-out cosine and R^2 say how good it is
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, Y)
    return Translator("mlp", model.coefs_, model.intercepts_), None, int(model.n_iter_)


def fit_translator(features, embeddings, kind: str = "linear", *, alphas=None, test_size: float = 0.2,
                   seed: int = 0, hidden=(256, 256), max_iter: int = 500) -> Translator:
    """Fit T: features (n, F) -> embeddings (n, E) on paired images and measure it on held-out pairs.

    kind: "linear" (RidgeCV over ``alphas``, default :data:`DEFAULT_ALPHAS`, with an intercept) or "mlp"
    (MLPRegressor with relu ``hidden`` layers, ``max_iter`` epochs, seeded by ``seed``). The split is
    ``sklearn.model_selection.train_test_split(test_size, random_state=seed)``; the report (:class:`FitReport`) is
    measured on its test part; the returned translator is refitted on all n pairs (linear: Ridge at the alpha
    chosen on the training split; mlp: same settings and seed). Embeddings are used as given (pass unit-normalised
    CLIP image embeddings). Raises WeightscopeError, before fitting, for non-2-D / non-finite / mismatched arrays,
    too few pairs for the split, an unknown kind, bad alphas or hidden sizes.
    """
    from sklearn.metrics import r2_score
    from sklearn.model_selection import train_test_split

    if kind == "linear":
        alphas = DEFAULT_ALPHAS if alphas is None else tuple(np.atleast_1d(np.asarray(alphas, dtype=np.float64)))
        if not alphas or not all(np.isfinite(a) and a > 0 for a in alphas):
            raise WeightscopeError(f"ridge alphas {alphas!r}; give positive finite penalties, e.g. [0.1, 1, 10]")
    elif kind == "mlp":
        hidden = tuple(hidden)
        if not hidden or not all(isinstance(h, (int, np.integer)) and h > 0 for h in hidden):
            raise WeightscopeError(f"hidden layer sizes {hidden!r}; give positive integers, e.g. (256, 256)")
        if not isinstance(max_iter, int) or max_iter < 1:
            raise WeightscopeError(f"max_iter = {max_iter!r}; give a positive number of epochs")
    X, Y = _check_pairs(features, embeddings, kind, test_size)
    X_tr, X_te, Y_tr, Y_te = train_test_split(X, Y, test_size=test_size, random_state=seed)
    split, alpha, n_iter = _fit_once(X_tr, Y_tr, kind, alphas, None, seed, hidden, max_iter)
    pred = split(X_te)
    cos = np.sum(pred * Y_te, axis=1) / np.maximum(np.linalg.norm(pred, axis=1) * np.linalg.norm(Y_te, axis=1), 1e-300)
    report = FitReport(kind, len(X_tr), len(X_te), alpha, float(np.mean(cos)),
                       float(r2_score(Y_te, pred, multioutput="variance_weighted")), n_iter, X.shape[1], Y.shape[1])
    final, _, _ = _fit_once(X, Y, kind, alphas, alpha, seed, hidden, max_iter)
    final.report = report
    return final


def check_widths(t: Translator, n_features: int, n_embed: int | None = None) -> None:
    """Raise WeightscopeError (one line) unless T maps width n_features to n_embed (None: not checked)."""
    if t.in_width != n_features or (n_embed is not None and t.out_width != n_embed):
        clip = f" (and the CLIP space {n_embed})" if n_embed is not None else ""
        raise WeightscopeError(f"translator maps width {t.in_width} -> {t.out_width} but the classifier's features "
                               f"have width {n_features}{clip}")


def save_translator(t: Translator, path) -> Path:
    """Write T to ``path`` (safetensors: arrays ``weight.i`` / ``bias.i`` float64, metadata: format tag, kind,
    widths, fit report as JSON), atomically through :func:`weightscope.core.fileio.write_atomic`."""
    from safetensors.numpy import save

    from ...core.fileio import write_atomic

    tensors = {}
    for i, (w, b) in enumerate(zip(t.weights, t.biases)):
        tensors[f"weight.{i}"], tensors[f"bias.{i}"] = np.ascontiguousarray(w), np.ascontiguousarray(b)
    meta = {"format": FORMAT, "kind": t.kind, "in_width": str(t.in_width), "out_width": str(t.out_width),
            "n_layers": str(len(t.weights)),
            "report": json.dumps(None if t.report is None else asdict(t.report)),
            "provenance": json.dumps(t.provenance)}
    return write_atomic(path, save(tensors, metadata=meta))


def load_translator(path) -> Translator:
    """Read a translator written by :func:`save_translator`. A missing, corrupt or foreign file -> WeightscopeError."""
    from safetensors.numpy import load

    path = Path(path)
    if not path.is_file():
        raise WeightscopeError(f"translator file not found: {path} (give a file written by save_translator)")
    try:
        raw = path.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8:8 + n]).get("__metadata__") or {}
        if meta.get("format") != FORMAT:
            raise ValueError("no weightscope translator format tag")
        arrays = load(raw)
        n_layers = int(meta["n_layers"])
        rep = json.loads(meta["report"])
        t = Translator(meta["kind"], [arrays[f"weight.{i}"] for i in range(n_layers)],
                       [arrays[f"bias.{i}"] for i in range(n_layers)],
                       width=int(meta["in_width"]) if meta["kind"] == "identity" else None,
                       report=None if rep is None else FitReport(**rep),
                       provenance=json.loads(meta.get("provenance", "null")))
    except WeightscopeError as err:
        raise WeightscopeError(f"translator file {path} is inconsistent: {err}") from None
    except Exception as err:     # safetensors / JSON / key errors of a damaged or foreign file: one line
        raise WeightscopeError(f"{path} is not a weightscope translator file ({type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else 'unreadable'})") from None
    if t.in_width != int(meta["in_width"]) or t.out_width != int(meta["out_width"]):
        raise WeightscopeError(f"translator file {path} is inconsistent: its arrays map {t.in_width} -> "
                               f"{t.out_width}, its header says {meta['in_width']} -> {meta['out_width']}")
    return t
