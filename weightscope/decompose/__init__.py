"""Per-head factors and their SVDs, the joint-space map and linear classifier heads (weights in, arrays out)."""
from .head_svd import HeadSVD, check_index, decompose_head, decompose_model, head_factors

__all__ = ["HeadSVD", "check_index", "decompose_head", "decompose_model", "head_factors"]
