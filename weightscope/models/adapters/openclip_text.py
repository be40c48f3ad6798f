"""Adapter for open_clip text towers: the only module that knows their attribute names.

Two model classes carry a text tower:
- ``open_clip.CLIP``: the tower's pieces are attributes of the model itself (``token_embedding``,
  ``positional_embedding``, ``transformer``, ``ln_final``, ``text_projection``, ``attn_mask``,
  ``text_pool_type``, ``text_eos_id``);
- ``open_clip.CustomTextCLIP``: the same pieces live on ``model.text`` (a ``TextTransformer``), or
  ``model.text`` is a Hugging Face encoder, which only the full-context path supports.

The fast path (:func:`encode_truncated`) relies on the causal mask: the pooled token at position p
attends to positions 0..p only, so positions after it can be cut off without changing the output.
It is exact for pooling at the end-of-text token ('argmax' or 'eos') or the first token, with a
causal mask and no appended class token; :func:`truncation_unsupported` says why otherwise.
"""
from __future__ import annotations

import functools
import types
import zlib
from dataclasses import dataclass

import torch

from ...core.errors import WeightscopeError
from ._finite import check_finite

# Digest blocks: a checksum per 4 MiB block, so one changed weight changes one block's checksum.
_HASH_BLOCK = 1 << 22


@dataclass(frozen=True)
class TextTower:
    """Handles (not copies) to one open_clip text tower's pieces.

    positional_embedding: (C, W) with C = context_length; attn_mask: (C, C) additive causal mask
    or None; text_projection: (W, E) parameter, an nn.Linear, or None.
    """

    family: str
    token_embedding: torch.nn.Module
    positional_embedding: torch.Tensor
    transformer: torch.nn.Module
    ln_final: torch.nn.Module
    text_projection: object
    attn_mask: torch.Tensor | None
    pool_type: str
    eos_id: int | None
    cls_emb: torch.Tensor | None
    context_length: int

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    def config(self) -> dict:
        """Settings that change the output without being weights (part of the cache identity)."""
        return {
            "family": self.family,
            "pool_type": self.pool_type,
            "eos_id": self.eos_id,
            "context_length": self.context_length,
            "causal": self.attn_mask is not None,
            "cls_emb": self.cls_emb is not None,
        }


def _unwrap(model):
    # weightscope.models.load.LoadedModel and similar wrappers keep the open_clip model in .model
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def text_tower(model) -> TextTower:
    """The text tower of an open_clip ``CLIP`` or ``CustomTextCLIP`` (or a wrapper holding one in
    ``.model``). Raises WeightscopeError for anything else, or for a Hugging Face text encoder."""
    model = _unwrap(model)
    if not isinstance(model, torch.nn.Module):
        raise WeightscopeError(f"expected an open_clip model (torch.nn.Module), got {type(model).__name__}")
    src, family = model, "open_clip.CLIP"
    if not hasattr(model, "token_embedding") and hasattr(model, "text"):
        src, family = model.text, "open_clip.CustomTextCLIP"
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final")
    missing = [a for a in needed if not hasattr(src, a)]
    if missing:
        raise WeightscopeError(
            f"{type(model).__name__} has no open_clip text transformer (missing {', '.join(missing)}); "
            "supported: open_clip CLIP and CustomTextCLIP with open_clip's TextTransformer "
            "(Hugging Face text encoders are not supported)"
        )
    # parameters only: the causal mask buffer holds -inf by design
    check_finite(_text_items(model, family, buffers=False), src.transformer, tower="text tower")
    pool = getattr(src, "text_pool_type", None) or getattr(src, "pool_type", None) or "argmax"
    eos = getattr(src, "text_eos_id", None) if src is model else getattr(src, "eos_id", None)
    return TextTower(
        family=family,
        token_embedding=src.token_embedding,
        positional_embedding=src.positional_embedding,
        transformer=src.transformer,
        ln_final=src.ln_final,
        text_projection=getattr(src, "text_projection", None),
        attn_mask=getattr(src, "attn_mask", None),
        pool_type=pool,
        eos_id=eos,
        cls_emb=getattr(src, "cls_emb", None),
        # tokens per text; CoCa-style towers hold one more positional row for the appended class token
        context_length=int(getattr(src, "context_length", None) or src.positional_embedding.shape[0]),
    )


def truncation_unsupported(tower: TextTower) -> str | None:
    """Why cutting the context would change this tower's output, or None when it is exact."""
    if tower.attn_mask is None:
        return "the text tower has no causal mask (bidirectional attention sees every position)"
    if tower.cls_emb is not None:
        return "the text tower appends a class token after the context (CoCa-style) and pools there"
    if tower.pool_type not in ("argmax", "eos", "first"):
        return f"the text tower pools with '{tower.pool_type}', not at the end-of-text token"
    if tower.pool_type == "eos" and tower.eos_id is None:
        return "the text tower pools at 'eos' but has no eos_id"
    return None


def pool_positions(tower: TextTower, tokens: torch.Tensor) -> torch.Tensor:
    """Index of the token each row is pooled at, computed on full-context tokens (N, C) exactly as
    open_clip's ``text_global_pool`` picks it. Returns (N,) int64."""
    if tower.pool_type == "argmax":
        return tokens.argmax(dim=-1)
    if tower.pool_type == "eos":
        return (tokens == tower.eos_id).int().argmax(dim=-1)
    if tower.pool_type == "first":
        return torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
    raise WeightscopeError(truncation_unsupported(tower) or f"unsupported pool type {tower.pool_type!r}")


def _project(tower: TextTower, pooled: torch.Tensor) -> torch.Tensor:
    proj = tower.text_projection
    if proj is None:
        return pooled
    if isinstance(proj, torch.nn.Linear):
        return proj(pooled)
    return pooled @ proj


def encode_truncated(tower: TextTower, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Text features of a batch cut to L = tokens.shape[1] positions.

    tokens: (B, L) int64, the first L columns of the full-context tokens, with every row's pooled
    position (positions, (B,), all < L) inside them. Returns (B, E) in the tower's dtype.
    Same maths as open_clip ``CLIP.encode_text`` / ``TextTransformer.forward`` on the full context.
    """
    reason = truncation_unsupported(tower)
    if reason:
        raise WeightscopeError(f"cannot encode with a cut context: {reason}; use the full context instead")
    length = tokens.shape[1]
    if length > tower.context_length:
        raise WeightscopeError(f"{length} tokens exceed the text tower's context of {tower.context_length}")
    cast_dtype = tower.transformer.get_cast_dtype() if hasattr(tower.transformer, "get_cast_dtype") \
        else tower.positional_embedding.dtype
    x = tower.token_embedding(tokens).to(cast_dtype)
    x = x + tower.positional_embedding[:length].to(cast_dtype)
    mask = tower.attn_mask[:length, :length]
    if getattr(tower.transformer, "batch_first", None) is None:
        # open_clip before batch_first support: the transformer takes (L, B, W)
        x = tower.transformer(x.permute(1, 0, 2), attn_mask=mask).permute(1, 0, 2)
    else:
        x = tower.transformer(x, attn_mask=mask)
    # LayerNorm acts per position, so normalising only the pooled rows gives the same result.
    pooled = x[torch.arange(x.shape[0], device=x.device), positions]
    return _project(tower, tower.ln_final(pooled))


def encode_full(model, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's own ``encode_text`` on full-context tokens (N, C) -> (N, E)."""
    return _unwrap(model).encode_text(tokens)


def text_tower_tensors(model) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer the text features depend on, sorted by name: everything except
    the vision tower and the logit scale/bias. For hashing the tower's identity."""
    model = _unwrap(model)
    return _text_items(model, text_tower(model).family)


def _text_items(model: torch.nn.Module, family: str, buffers: bool = True) -> list[tuple[str, torch.Tensor]]:
    skip = ("visual.", "logit_scale", "logit_bias")
    items = {}
    for name, t in list(model.named_parameters()) + (list(model.named_buffers()) if buffers else []):
        if not name.startswith(skip):
            items[name] = t
    if family == "open_clip.CustomTextCLIP":
        items = {k: v for k, v in items.items() if k.startswith("text.")}
    return sorted(items.items())


def tensor_signature(tensors: list[tuple[str, torch.Tensor]]) -> tuple:
    """Cheap identity of the tensors' storage and in-place version counters (not their values)."""
    return tuple((n, t.data_ptr(), t._version, tuple(t.shape), str(t.dtype), str(t.device)) for n, t in tensors)


def tensor_digest_records(tensors: list[tuple[str, torch.Tensor]]):
    """Yield one bytes record per tensor: name, dtype, shape and a CRC-32 per 4 MiB block of its
    raw bytes. CRC-32 runs at memory speed where SHA-256 over a 250 MB tower takes seconds."""
    for name, t in tensors:
        data = t.detach()
        if data.device.type != "cpu":
            data = data.cpu()
        data = data.contiguous()
        raw = data.view(torch.uint8) if data.element_size() == 1 else data.view(-1).view(torch.uint8)
        buf = memoryview(raw.numpy())
        crcs = [zlib.crc32(buf[i:i + _HASH_BLOCK]) for i in range(0, len(buf), _HASH_BLOCK)]
        yield f"{name}|{data.dtype}|{tuple(data.shape)}|{','.join(map(str, crcs))}\n".encode()


def _describe(val) -> str:
    if isinstance(val, (int, float, str, bool)):
        return str(val)
    func = getattr(val, "func", val)          # functools.partial -> the wrapped function
    return getattr(func, "__qualname__", None) or type(val).__qualname__


def tokenizer_fingerprint(tokenizer) -> str:
    """A string that changes when the tokenizer would produce different tokens for the same text
    (class, vocabulary size, special ids, cleaning), without tokenizing anything. Stable across
    processes (no object addresses)."""
    if isinstance(tokenizer, (types.FunctionType, functools.partial)):
        func = getattr(tokenizer, "func", tokenizer)
        return f"{func.__module__}.{func.__qualname__}"
    cls = type(tokenizer)
    parts = [f"{cls.__module__}.{cls.__qualname__}"]
    for attr in ("vocab_size", "sot_token_id", "eot_token_id", "context_length", "clean_fn",
                 "reduction_fn", "pad_id", "tokenizer_name", "name_or_path"):
        val = getattr(tokenizer, attr, None)
        if val is not None:
            parts.append(f"{attr}={_describe(val)}")
    inner = getattr(tokenizer, "tokenizer", None)   # HFTokenizer / SigLipTokenizer wrap a HF tokenizer
    if inner is not None:
        parts.append(f"hf={getattr(inner, 'name_or_path', None) or type(inner).__qualname__}")
    return ";".join(parts)


def _pad_id(tokenizer) -> int:
    inner = getattr(tokenizer, "tokenizer", None)
    pad = getattr(inner, "pad_token_id", None) if inner is not None else None
    return int(pad) if pad is not None else 0


def tokenize(tokenizer, texts: list[str], context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize with the model's own tokenizer at ``context_length``.

    Returns (tokens (N, C) int64 exactly as open_clip's tokenizer gives them, i.e. over-long texts
    already truncated its way; overlong (N,) bool: the text needed more than C tokens).
    A row that fills the whole context is either exactly C tokens long or was cut; only those rows
    are tokenized again at C + 1 to tell which.
    """
    try:
        tokens = tokenizer(texts, context_length=context_length)
    except TypeError:
        tokens = tokenizer(texts)
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if tokens.ndim != 2 or tokens.shape[0] != len(texts) or tokens.shape[1] != context_length:
        raise WeightscopeError(
            f"the tokenizer returned shape {tuple(tokens.shape)} for {len(texts)} texts; expected "
            f"({len(texts)}, {context_length}): pass the tokenizer that belongs to this model "
            "(open_clip.get_tokenizer(model_name))"
        )
    pad = _pad_id(tokenizer)
    overlong = torch.zeros(len(texts), dtype=torch.bool)
    full = torch.nonzero(tokens[:, -1] != pad).flatten().tolist()
    if full:
        try:
            longer = torch.as_tensor(tokenizer([texts[i] for i in full], context_length=context_length + 1))
            overlong[full] = longer[:, -1] != pad
        except TypeError:   # a tokenizer without a context_length argument: every full row counts
            overlong[full] = True
    return tokens, overlong
