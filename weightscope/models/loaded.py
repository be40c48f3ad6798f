"""The loaded model every later step takes: module, tokenizer, preprocessing, name and weight source.

Its own module, below ``load`` and the adapters, so that an adapter that builds one (a transformers folder) does
not import the loader that imports the adapters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class LoadedModel:
    """An open_clip model in eval mode with what is needed to use it.

    model: the open_clip CLIP module; tokenizer: callable list[str] -> LongTensor (N, context);
    preprocess: PIL image -> tensor transform (None when unknown); name: architecture name (open_clip config);
    source: where the weights came from (pretrained tag, checkpoint path, "random-init", or "object").
    """

    model: torch.nn.Module
    tokenizer: Any
    preprocess: Any
    name: str
    source: str

    @property
    def identity(self) -> str:
        """A human-readable id: architecture plus weight source."""
        return f"{self.name}:{self.source}"
