"""Text towers of Hugging Face ``transformers`` CLIP models, with the interface :mod:`openclip_text` offers
:mod:`weightscope.concepts.embed` (text_tower, truncation_unsupported, pool_positions, encode_truncated, encode_full,
text_tower_tensors, tokenize, ...), so concept embeddings use the model's own text tower, bucketed the same way.

transformers' ``CLIPTextModel`` is causal (each position attends to itself and earlier ones) and builds its
position ids and mask from the input length, so cutting the context after the pooled token is exact, as for
open_clip. It pools at the end-of-text token: the largest id for configs whose ``eos_token_id`` is 2 (saved
before transformers PR #24773), else the first position holding ``eos_token_id``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ...core.errors import WeightscopeError
from ._finite import check_finite
from .openclip_text import tensor_digest_records, tensor_signature, tokenize, tokenizer_fingerprint  # noqa: F401

FAMILY = "transformers.CLIPTextModel"
#: vocabulary size of OpenAI CLIP's byte-pair encoding, which open_clip bundles (its SimpleTokenizer)
OPENAI_VOCAB = 49408
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


@dataclass(frozen=True)
class HFTextTower:
    """Handles to a transformers CLIP text tower: text_model (CLIPTextTransformer), text_projection (nn.Linear)."""

    family: str
    text_model: torch.nn.Module
    text_projection: torch.nn.Module
    eos_token_id: int
    context_length: int

    @property
    def device(self) -> torch.device:
        return self.text_projection.weight.device

    def config(self) -> dict:
        """Settings that change the output without being weights (part of the cache identity)."""
        return {"family": self.family, "eos_token_id": self.eos_token_id, "context_length": self.context_length}


def _unwrap(model):
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def text_tower(model) -> HFTextTower:
    """The text tower of a transformers ``CLIPModel`` (or a wrapper holding one in ``.model``)."""
    model = _unwrap(model)
    text, proj = getattr(model, "text_model", None), getattr(model, "text_projection", None)
    if text is None or proj is None:
        raise WeightscopeError(
            f"{type(model).__name__} has no text tower with a projection; concept embeddings need a CLIPModel "
            "(a CLIPVisionModelWithProjection alone cannot embed text)")
    check_finite(_text_items(model), None, tower="text tower")
    cfg = text.config
    return HFTextTower(family=FAMILY, text_model=text, text_projection=proj, eos_token_id=int(cfg.eos_token_id),
                       context_length=int(cfg.max_position_embeddings))


def truncation_unsupported(tower: HFTextTower) -> None:
    """Always None: the tower is causal and pools at the end-of-text token (see the module docstring)."""
    return None


def pool_positions(tower: HFTextTower, tokens: torch.Tensor) -> torch.Tensor:
    """Index (N,) of the token each row of ``tokens`` (N, C) is pooled at, as ``CLIPTextTransformer`` picks it."""
    if tower.eos_token_id == 2:  # legacy configs: the end-of-text token has the largest id
        return tokens.argmax(dim=-1)
    hit = tokens == tower.eos_token_id
    if not bool(hit.any(dim=-1).all()):
        raise WeightscopeError(f"a tokenized text has no end-of-text token (id {tower.eos_token_id}); pass the "
                               "tokenizer that belongs to this model")
    return hit.int().argmax(dim=-1)


def encode_truncated(tower: HFTextTower, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Projected text features (B, E) of tokens cut to L columns (every pooled position < L)."""
    if tokens.shape[1] > tower.context_length:
        raise WeightscopeError(f"{tokens.shape[1]} tokens exceed the text tower's context of {tower.context_length}")
    hidden = tower.text_model(input_ids=tokens).last_hidden_state  # final_layer_norm already applied
    return tower.text_projection(hidden[torch.arange(hidden.shape[0], device=hidden.device), positions])


def encode_full(model, tokens: torch.Tensor) -> torch.Tensor:
    """transformers' own ``get_text_features`` on full-context tokens (N, C) -> (N, E)."""
    out = _unwrap(model).get_text_features(input_ids=tokens)
    return out if torch.is_tensor(out) else out.pooler_output


def text_tower_tensors(model) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer the text features depend on, sorted by name (for the tower's identity)."""
    return _text_items(_unwrap(model), buffers=True)


def _text_items(model, buffers: bool = False) -> list[tuple[str, torch.Tensor]]:
    items = dict(model.named_parameters())
    if buffers:
        items.update(model.named_buffers())
    return sorted((k, v) for k, v in items.items() if k.startswith(("text_model.", "text_projection.")))


def default_tokenizer(model, folder: Path | None):
    """The model's tokenizer as a callable ``(texts, context_length) -> LongTensor (N, C)``.

    A folder with tokenizer files: those, through open_clip's HFTokenizer wrapper (transformers' tokenizer).
    Otherwise OpenAI CLIP's byte-pair encoding bundled with open_clip, which is the tokenizer of every CLIP
    text tower with OpenAI's 49,408-token vocabulary; None for vision-only models.
    """
    text = getattr(model, "text_model", None)
    if text is None:
        return None
    context = int(text.config.max_position_embeddings)
    if folder is not None and any((Path(folder) / f).is_file() for f in TOKENIZER_FILES):
        from open_clip.tokenizer import HFTokenizer

        return HFTokenizer(str(folder), context_length=context)
    if int(text.config.vocab_size) != OPENAI_VOCAB:
        raise WeightscopeError(
            f"the text tower has a {text.config.vocab_size}-token vocabulary and no tokenizer files were found; "
            "put the model's tokenizer files (tokenizer.json or vocab.json + merges.txt) in its folder")
    import open_clip

    return open_clip.get_tokenizer("ViT-B-32", context_length=context)
