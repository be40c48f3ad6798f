"""CLI subcommands, one module each (see weightscope.cli), and the argument helpers they share."""
from __future__ import annotations

import argparse
import re

from ..errors import WeightscopeError

_RANGE = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?$")


def parse_indices(text: str | None, option: str) -> list[int] | None:
    """'0,3-5,-1' -> sorted distinct ints [-1, 0, 3, 4, 5]; None (option not given) -> None (all)."""
    if text is None:
        return None
    out: set[int] = set()
    for part in str(text).split(","):
        m = _RANGE.match(part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise WeightscopeError(f"cannot read index list {option} {text!r}: write e.g. 3,4 or a range 2-5 (-1 = last)")
        lo = int(m.group(1))
        out.update(range(lo, int(m.group(2) or lo) + 1))
    return sorted(out)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """MODEL [--pretrained TAG | --checkpoint PATH] [--trust-checkpoint], as load_model takes them."""
    p.add_argument("model", nargs="?", default=None,
                   help="open_clip model name, or a checkpoint weightscope wrote "
                        "(default: the bundled shapes-world model)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pretrained", metavar="TAG", help="open_clip pretrained tag (bundled model: base or tuned)")
    src.add_argument("--checkpoint", metavar="PATH", help="local checkpoint file (.safetensors, .pt, .bin)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle a torch checkpoint in full (it holds objects other than tensors); "
                        "only for files you trust: unpickling can run code")
