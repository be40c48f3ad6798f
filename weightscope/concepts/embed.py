"""Concept embeddings with the model's own text tower, bucketed by length and cached on disk.

METHODS.md section 4. :func:`embed_concepts` tokenizes every concept with the model's tokenizer,
sorts the concepts by the position of the token the tower pools at (the end-of-text token), and
encodes consecutive batches with the context cut to the batch's longest member. The causal mask
makes this exact: the pooled token never sees the positions cut away. For typical 1-4 word concepts
that is 3-8 positions instead of 77.

Normalisation (``normalize``):
- "none":   raw text features (M, E);
- "l2":     each row scaled to unit length;
- "splice": unit rows, minus the mean row of the dictionary, unit rows again (SpLiCE / SITH).

Cache: ``<cache dir>/embeddings/<model>-<key>.wsemb``, where the cache dir is the ``cache_dir``
argument, else $WEIGHTSCOPE_CACHE_DIR, else ``platformdirs.user_cache_dir("weightscope")``; the key
hashes the model name, the text-tower weights and settings, the tokenizer, the vocabulary, the
template, the normalisation and the over-long policy. Files are written atomically (temporary
file + os.replace); a file whose header, length or checksum does not match is reported with a
warning and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
import weakref
import zlib
from pathlib import Path

import numpy as np
import torch

from ..models.adapters import text_adapter
from ..core.compute import reused_temporaries
from ..core.errors import WeightscopeError
from ..core.fileio import write_atomic
from .vocab import load_vocabulary, validate_concepts

__all__ = [
    "NORMALIZATIONS",
    "embed_concepts",
    "encode_texts",
    "normalize_embeddings",
    "default_cache_dir",
    "text_tower_hash",
    "forget_model_hash",
    "vocabulary_hash",
    "cache_key",
    "cache_path",
]

NORMALIZATIONS = ("none", "l2", "splice")
CACHE_ENV = "WEIGHTSCOPE_CACHE_DIR"
_FORMAT = 2                      # bump when the cached content changes meaning
_MAGIC = b"WSEMB\x02\n"
_OVERLONG = ("error", "truncate")

# model -> (tensor signature, digest): hashing a 250 MB tower costs ~0.3 s, a signature ~1 ms.
_hash_memo: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


# ------------------------------------------------------------------------------------------------
# Normalisation
# ------------------------------------------------------------------------------------------------

def normalize_embeddings(emb: np.ndarray, normalize: str = "splice") -> np.ndarray:
    """Normalise a dictionary of embeddings (M, E) -> (M, E) float32; modes in the module docstring.

    Computed in float64. "splice" needs at least two concepts that are not all the same direction.
    """
    if normalize not in NORMALIZATIONS:
        raise WeightscopeError(f"normalize={normalize!r}; use one of {', '.join(NORMALIZATIONS)}")
    x = np.asarray(emb, dtype=np.float64)
    if x.ndim != 2:
        raise WeightscopeError(f"embeddings must be a 2-D array (M, E), got shape {x.shape}")
    if normalize == "none":
        return x.astype(np.float32)
    x = _unit_rows(x, "embedding")
    if normalize == "splice":
        if x.shape[0] < 2:
            raise WeightscopeError("normalize='splice' subtracts the dictionary mean and needs at least 2 concepts; use 'l2'")
        x = _unit_rows(x - x.mean(axis=0, keepdims=True), "mean-centred embedding")
    return x.astype(np.float32)


def _unit_rows(x: np.ndarray, what: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    tiny = norms[:, 0] <= 1e-12 * max(1.0, float(norms.max(initial=0.0)))
    if tiny.any():
        raise WeightscopeError(
            f"{what} {int(np.flatnonzero(tiny)[0])} has (near) zero length and has no direction; "
            "remove that concept or use normalize='none'"
        )
    return x / norms


# ------------------------------------------------------------------------------------------------
# Encoding
# ------------------------------------------------------------------------------------------------

def _apply_template(concepts: list[str], template: str | None) -> list[str]:
    if template is None:
        return concepts
    if not isinstance(template, str) or template.count("{}") != 1:
        raise WeightscopeError(f"template={template!r}; give a string with exactly one '{{}}', e.g. 'a photo of {{}}'")
    return [template.replace("{}", c) for c in concepts]


#: Above this many batches encode_texts reuses its temporaries (``weightscope.core.compute.reused_temporaries``).
_REUSE_BATCHES = 16


def encode_texts(
    model,
    tokenizer,
    texts: list[str],
    *,
    batch_size: int = 256,
    bucketed: bool | None = None,
    on_overlong: str = "error",
    progress: bool = True,
    compute=None,
) -> np.ndarray:
    """Raw text features (M, E) float32 of ``texts`` (no normalisation, no cache), in input order.

    compute: a ``weightscope.core.compute.Compute`` (device and precision) or None = where the model is, in its
    own precision. With a device, the model runs there for this call and is moved back after; with bf16/fp16
    the tower runs under torch.autocast (matrix products in that precision, norms and softmax in float32;
    METHODS.md section 14).

    bucketed: True = cut the context per batch (exact, fast; error if the tower does not allow
    it), False = open_clip's ``encode_text`` on the full context, None = bucketed when allowed,
    else full context with a warning. on_overlong: "error" (default) or "truncate" (open_clip's
    behaviour: the first C-1 tokens, then end-of-text).
    """
    if on_overlong not in _OVERLONG:
        raise WeightscopeError(f"on_overlong={on_overlong!r}; use 'error' or 'truncate'")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise WeightscopeError(f"batch_size={batch_size!r}; use a positive integer")
    oct_ = text_adapter(model)   # open_clip or transformers text tower
    tower = oct_.text_tower(model)
    reason = oct_.truncation_unsupported(tower)
    if bucketed is None:
        bucketed = reason is None
        if not bucketed:
            warnings.warn(f"embedding at the full context (slower): {reason}", stacklevel=2)
    elif bucketed and reason is not None:
        raise WeightscopeError(f"bucketed encoding is not exact for this model: {reason}; pass bucketed=False")

    tokens, overlong = oct_.tokenize(tokenizer, list(texts), tower.context_length)
    if on_overlong == "error" and bool(overlong.any()):
        bad = torch.nonzero(overlong).flatten().tolist()
        shown = "; ".join(f"entry {i} {texts[i][:60]!r}" for i in bad[:3])
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise WeightscopeError(
            f"{len(bad)} concept(s) tokenize to more than the text tower's context of {tower.context_length} "
            f"tokens: {shown}{more}; shorten them, or pass on_overlong='truncate' to cut them as open_clip does"
        )

    m = tokens.shape[0]
    if bucketed:
        positions = oct_.pool_positions(tower, tokens)
        # Stable sort by needed length; ties keep input order, so batches are reproducible.
        order = torch.argsort(positions, stable=True)
    else:
        positions = None
        order = torch.arange(m)

    home = tower.device
    device = home if compute is None else compute.torch_device()
    out: np.ndarray | None = None
    root = oct_._unwrap(model)
    was_training = root.training
    from contextlib import nullcontext

    from tqdm.auto import tqdm

    autocast = nullcontext() if compute is None or compute.precision == "fp32" else \
        torch.autocast(device.type, dtype=compute.gemm_dtype())
    root.eval()   # dropout off; restored below so the caller's model is left as it was
    if device != home:
        root.to(device)
    try:
        # many batches: reuse their temporaries (page faults were a fifth of a long embedding); a few batches gain
        # nothing and the kept heap would add to a small run's peak (both measured)
        reuse = reused_temporaries() if m > _REUSE_BATCHES * batch_size else nullcontext()
        with reuse, torch.inference_mode(), autocast, tqdm(total=m, unit="concept", desc=f"embedding concepts ({device.type})",
                                                    disable=not progress, leave=False) as bar:
            for start in range(0, m, batch_size):
                idx = order[start:start + batch_size]
                batch = tokens[idx]
                if bucketed:
                    pos = positions[idx]
                    length = int(pos.max()) + 1
                    feats = oct_.encode_truncated(tower, batch[:, :length].to(device), pos.to(device))
                else:
                    feats = oct_.encode_full(model, batch.to(device))
                feats = feats.float().cpu().numpy()
                if out is None:
                    out = np.empty((m, feats.shape[1]), dtype=np.float32)
                out[idx.numpy()] = feats
                bar.update(len(idx))
    finally:
        root.train(was_training)
        if device != home:
            root.to(home)
    return out


# ------------------------------------------------------------------------------------------------
# Cache
# ------------------------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    """$WEIGHTSCOPE_CACHE_DIR if set, else the per-user cache dir (platformdirs)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("weightscope"))


def text_tower_hash(model) -> str:
    """Hex digest identifying a model's text tower: its settings plus a checksum of every tensor
    the text features depend on. Memoised per model object; the memo is dropped when any tensor is
    replaced or modified in place through torch (tracked by tensor version counters; writes that
    bypass autograd's counter, e.g. ``param.data[...] = x``, are not seen: call
    :func:`forget_model_hash` after those)."""
    oct_ = text_adapter(model)
    root = oct_._unwrap(model)
    tensors = oct_.text_tower_tensors(root)
    sig = oct_.tensor_signature(tensors)
    memo = _hash_memo.get(root)
    if memo is not None and memo[0] == sig:
        return memo[1]
    h = hashlib.sha256()
    h.update(json.dumps(oct_.text_tower(root).config(), sort_keys=True).encode())
    for record in oct_.tensor_digest_records(tensors):
        h.update(record)
    digest = h.hexdigest()
    _hash_memo[root] = (sig, digest)
    return digest


def forget_model_hash(model) -> None:
    """Drop the memoised weight hash of ``model`` (after editing its tensors behind torch's back)."""
    _hash_memo.pop(text_adapter(model)._unwrap(model), None)


def vocabulary_hash(concepts: list[str]) -> str:
    """SHA-256 of the ordered concept list (JSON-encoded, so no separator is ambiguous)."""
    return hashlib.sha256(json.dumps(list(concepts), ensure_ascii=False).encode("utf-8")).hexdigest()


def cache_key(*, model_name: str | None, weights_hash: str, tokenizer_id: str, concepts_hash: str,
              template: str | None, normalize: str, on_overlong: str, precision: str = "fp32") -> str:
    """Hex key of one cached embedding matrix; changes when any argument changes (precision only when not
    fp32, so that keys written before it existed stay valid)."""
    payload = {
        "format": _FORMAT,
        "model_name": model_name,
        "weights": weights_hash,
        "tokenizer": tokenizer_id,
        "concepts": concepts_hash,
        "template": template,
        "normalize": normalize,
        "on_overlong": on_overlong,
    }
    if precision != "fp32":
        payload["precision"] = precision
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def cache_path(cache_dir: Path, model_name: str | None, key: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name or "model")[:60]
    return Path(cache_dir) / "embeddings" / f"{slug}-{key[:32]}.wsemb"


def _read_cache(path: Path, key: str, m: int) -> np.ndarray | None:
    """The cached matrix, or None when absent; a damaged file is reported and treated as absent."""
    try:
        with open(path, "rb") as fh:
            buf = bytearray(os.fstat(fh.fileno()).st_size)
            got = fh.readinto(buf)
    except (FileNotFoundError, NotADirectoryError):
        return None      # not cached yet (an unusable folder is reported when writing)
    except OSError as err:
        warnings.warn(f"weightscope: cannot read embedding cache {path} ({err.strerror}); recomputing", stacklevel=3)
        return None
    try:
        if got != len(buf) or not buf.startswith(_MAGIC):
            raise ValueError("not a weightscope embedding cache file")
        pos = len(_MAGIC)
        hlen = int.from_bytes(buf[pos:pos + 8], "little")
        header = json.loads(bytes(buf[pos + 8:pos + 8 + hlen]).decode("utf-8"))
        offset = pos + 8 + hlen
        shape = tuple(header["shape"])
        if header.get("key") != key:
            raise ValueError("key mismatch")
        if header.get("dtype") != "float32" or len(shape) != 2 or shape[0] != m:
            raise ValueError(f"unexpected shape {shape}")
        if len(buf) - offset != shape[0] * shape[1] * 4:
            raise ValueError(f"truncated: {len(buf) - offset} of {shape[0] * shape[1] * 4} data bytes")
        if zlib.crc32(memoryview(buf)[offset:]) != header.get("crc32"):
            raise ValueError("checksum mismatch")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        warnings.warn(f"weightscope: embedding cache {path} is corrupt ({err}); recomputing it", stacklevel=3)
        return None
    # a writable view on the bytearray: no copy of the (up to ~100 MB) matrix
    return np.frombuffer(buf, dtype="<f4", offset=offset).reshape(shape)


def _write_cache(path: Path, key: str, emb: np.ndarray, info: dict) -> None:
    emb = np.ascontiguousarray(emb, dtype="<f4")
    data = emb.tobytes()
    # CRC-32 detects damage at memory speed; SHA-256 of an 80 MB matrix would dominate a cache hit.
    header = json.dumps({**info, "key": key, "shape": list(emb.shape), "dtype": "float32",
                         "crc32": zlib.crc32(data)}).encode("utf-8")
    header += b" " * (-(len(_MAGIC) + 8 + len(header)) % 64)    # data starts 64-byte aligned
    try:
        write_atomic(path, _MAGIC + len(header).to_bytes(8, "little") + header + data)
    except OSError as err:
        warnings.warn(f"weightscope: could not write embedding cache {path} ({err.strerror}); continuing without", stacklevel=3)


# ------------------------------------------------------------------------------------------------
# Public entry point
# ------------------------------------------------------------------------------------------------

def embed_concepts(
    model,
    tokenizer,
    concepts,
    template: str | None = None,
    normalize: str = "splice",
    batch_size: int = 256,
    cache_dir: str | os.PathLike | None = None,
    model_name: str | None = None,
    progress: bool = True,
    *,
    use_cache: bool = True,
    on_overlong: str = "error",
    compute=None,
) -> np.ndarray:
    """Embed a concept dictionary with the model's own text tower -> (M, E) float32, row i = concept i.

    model: open_clip CLIP / CustomTextCLIP (or a wrapper holding one in ``.model``); tokenizer: the
    model's tokenizer (``open_clip.get_tokenizer(name)``). concepts: a built-in vocabulary name or
    a file path (loaded with :func:`weightscope.concepts.vocab.load_vocabulary`, duplicates dropped), or a
    sequence of strings, which must be duplicate-free so that rows match entries one to one.
    template: None (default, the bare concept) or a string with one "{}", e.g. "a photo of {}".
    normalize: "none" / "l2" / "splice" (default). cache_dir: overrides $WEIGHTSCOPE_CACHE_DIR and
    the per-user default; use_cache=False neither reads nor writes. model_name: part of the cache
    key and file name (the weights hash is always part of the key). on_overlong: see :func:`encode_texts`;
    the context is cut per batch when the tower allows it (exact: bucketed and full-context results agree to float
    rounding, ~1e-6, so the choice is not part of the cache key). compute: device and precision of the text tower (see
    :func:`encode_texts`); the precision is part of the cache key, the device is not (devices agree to float
    rounding in fp32).
    """
    if isinstance(concepts, (str, os.PathLike)):
        concepts = load_vocabulary(concepts)
    else:
        concepts = validate_concepts(concepts, duplicates="error", what="concepts")
    if normalize not in NORMALIZATIONS:
        raise WeightscopeError(f"normalize={normalize!r}; use one of {', '.join(NORMALIZATIONS)}")
    if on_overlong not in _OVERLONG:
        raise WeightscopeError(f"on_overlong={on_overlong!r}; use 'error' or 'truncate'")
    if normalize == "splice" and len(concepts) < 2:
        raise WeightscopeError("normalize='splice' subtracts the dictionary mean and needs at least 2 concepts; use 'l2'")
    texts = _apply_template(concepts, template)

    path = key = None
    if use_cache:
        key = cache_key(
            model_name=model_name,
            weights_hash=text_tower_hash(model),
            tokenizer_id=text_adapter(model).tokenizer_fingerprint(tokenizer),
            concepts_hash=vocabulary_hash(concepts),
            template=template,
            normalize=normalize,
            on_overlong=on_overlong,
            precision="fp32" if compute is None else compute.precision,
        )
        path = cache_path(Path(cache_dir) if cache_dir is not None else default_cache_dir(), model_name, key)
        hit = _read_cache(path, key, len(concepts))
        if hit is not None:
            return hit

    raw = encode_texts(model, tokenizer, texts, batch_size=batch_size, bucketed=None,
                       on_overlong=on_overlong, progress=progress, compute=compute)
    emb = normalize_embeddings(raw, normalize)
    if use_cache:
        _write_cache(path, key, emb, {"model_name": model_name, "n_concepts": len(concepts),
                                      "template": template, "normalize": normalize})
    return emb
