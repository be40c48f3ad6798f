"""One finiteness check for every adapter: the first tensor holding NaN or inf, named with its layer and head.

A NaN in one weight otherwise surfaces far away (``LinAlgError: SVD did not converge``, a NaN dictionary), so
adapters call :func:`check_finite` once, when they first read a model.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

import torch

from ...core.errors import WeightscopeError

_LAYER = re.compile(r"(?:^|\.)resblocks\.(\d+)\.")


def _heads_of(name: str, index: torch.Tensor, transformer: torch.nn.Module) -> str:
    """Which head(s) the entries ``index`` (n, ndim) of parameter ``name`` belong to, in words.

    open_clip's attention packs q, k, v as row blocks of ``in_proj_weight`` (3D, D), head h owning rows
    h dh .. (h+1) dh of each block, and ``out_proj.weight`` (D, D) reads head h from columns h dh .. (h+1) dh.
    """
    attn = transformer.resblocks[int(_LAYER.search(name).group(1))].attn
    D, H = attn.out_proj.weight.shape[0], attn.num_heads
    dh = D // H
    what = ""
    if name.endswith(("attn.in_proj_weight", "attn.in_proj_bias")):
        heads = sorted({(int(r) % D) // dh for r in index[:, 0]})
        what = "/".join(sorted({"qkv"[int(r) // D] for r in index[:, 0]}, key="qkv".index)) + " part"
    elif name.endswith("attn.out_proj.weight"):
        heads = sorted({int(c) // dh for c in index[:, 1]})
    elif name.endswith(("attn.head_scale", "attn.logit_scale")):
        heads = sorted({int(h) for h in index[:, 0]})
    else:
        return "not head-specific"
    listed = ", ".join(str(h) for h in heads[:8]) + (", ..." if len(heads) > 8 else "")
    return f"head{'s' if len(heads) > 1 else ''} {listed}" + (f", {what}" if what else "")


_CHUNK = 1 << 20


def _all_finite(t: torch.Tensor) -> bool:
    """Whether every entry is finite, checked a million entries at a time: ``torch.isfinite`` makes a float copy
    (``abs``) and two masks of its input, 150 MB at once for a text tower's token embedding."""
    flat = t.reshape(-1)
    return all(bool(torch.isfinite(flat[i:i + _CHUNK]).all()) for i in range(0, flat.numel(), _CHUNK))


def check_finite(named: Iterable[tuple[str, torch.Tensor]], transformer: torch.nn.Module, prefix: str = "",
                 tower: str = "") -> None:
    """Raise WeightscopeError naming the first of ``named`` (name, tensor) pairs that holds NaN or inf.

    transformer: the module whose ``resblocks`` the names' ``resblocks.N.`` refer to (for the head);
    prefix: prepended to names in the message (e.g. "visual."); tower: e.g. "text tower", named in the message.
    """
    for name, t in named:
        if not t.is_floating_point() or t.is_meta or _all_finite(t.detach()):
            continue
        bad = ~torch.isfinite(t.detach())
        index = bad.nonzero()
        values = t.detach()[bad]
        n_nan = int(torch.isnan(values).sum())
        layer = _LAYER.search(name)
        where = [tower] if tower else []
        if layer:
            where += [f"layer {layer.group(1)}", _heads_of(name, index, transformer)]
        raise WeightscopeError(
            f"non-finite weights: {prefix}{name}{' (' + ', '.join(where) + ')' if where else ''} holds "
            f"{n_nan} NaN and {len(values) - n_nan} inf of {t.numel()} values, first at index "
            f"{tuple(index[0].tolist())}; weightscope needs finite weights: re-download or repair the checkpoint"
        )
