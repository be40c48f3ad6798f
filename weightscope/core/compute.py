"""Where and in what precision the heavy arithmetic runs (METHODS.md section 14).

    from weightscope.core.compute import Compute
    Compute()                                  # CPU, float32 products, the Numba solvers (the default)
    Compute(device="cuda", precision="bf16")   # GPU, bf16 text tower and correlation GEMMs, torch solvers
    Compute(device="auto").torch_device()      # cuda if present, else mps, else cpu

Policy: concept embedding and correlation GEMMs in ``precision`` (fp32 default; bf16/fp16 only when asked);
least-squares re-fits, SVD cores and everything reported as exact in float64 where the device has it (CPU,
CUDA), else float32 (MPS). Nothing here imports torch at module level (the CLI's --help stays fast).
"""
from __future__ import annotations

import contextlib

from dataclasses import dataclass

from .errors import WeightscopeError

DEVICES = ("cpu", "cuda", "mps", "auto")
PRECISIONS = ("fp32", "bf16", "fp16")
BACKENDS = ("numba", "torch")

#: Coefficient agreement with the float64 CPU path that a float32-only device (MPS) is held to.
FLOAT32_REFIT_TOL = 1e-4


@dataclass(frozen=True)
class Compute:
    """Device, precision and solver backend of one run.

    device: "cpu", "cuda" (or "cuda:N"), "mps" or "auto" (cuda if available, else mps, else cpu).
    precision: "fp32" (default), "bf16" or "fp16": the text tower and the correlation GEMMs.
    backend: "numba" (CPU only), "torch", or None = numba on the CPU, torch elsewhere.
    Raises WeightscopeError (one line) for a value outside these.
    """

    device: str = "cpu"
    precision: str = "fp32"
    backend: str | None = None

    def __post_init__(self):
        base = str(self.device).split(":")[0]
        if base not in DEVICES or (":" in str(self.device) and base != "cuda"):
            raise WeightscopeError(f"device {self.device!r} is not one of {', '.join(DEVICES)} (or cuda:N)")
        if self.precision not in PRECISIONS:
            raise WeightscopeError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.backend is not None and self.backend not in BACKENDS:
            raise WeightscopeError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")

    def torch_device(self):
        """The resolved ``torch.device``; raises WeightscopeError when the named device is not present."""
        import torch

        base = str(self.device).split(":")[0]
        if base == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            if _mps_available():
                return torch.device("mps")
            return torch.device("cpu")
        if base == "cuda" and not torch.cuda.is_available():
            raise WeightscopeError("device 'cuda' asked for, but torch sees no CUDA GPU here; use --device cpu "
                                   "(or auto)")
        if base == "mps" and not _mps_available():
            raise WeightscopeError("device 'mps' asked for, but this torch has no Apple MPS device; use --device cpu")
        return torch.device(self.device)

    def solver_backend(self) -> str:
        """"numba" or "torch": the explicit backend, else numba on the CPU and torch on any other device."""
        if self.backend is not None:
            if self.backend == "numba" and self.torch_device().type != "cpu":
                raise WeightscopeError(f"backend 'numba' runs on the CPU only, not on {self.device!r}; "
                                       "use backend 'torch' (or device cpu)")
            return self.backend
        return "numba" if self.torch_device().type == "cpu" else "torch"

    def gemm_dtype(self):
        """torch dtype of the text tower's and the correlations' arithmetic."""
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    def exact_dtype(self):
        """torch dtype of re-fits and SVD cores: float64 where the device has it, else float32."""
        import torch

        return torch.float32 if self.torch_device().type == "mps" else torch.float64

    def describe(self) -> str:
        """A short label for logs and reports, e.g. "cuda (NVIDIA H100), fp32, torch"."""
        dev = self.torch_device()
        name = dev.type
        if dev.type == "cuda":
            import torch

            name = f"cuda ({torch.cuda.get_device_name(dev)})"
        return f"{name}, {self.precision}, {self.solver_backend()}"


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def as_compute(value) -> Compute:
    """A Compute from a Compute, None (the default), a backend name ("numba", "torch": torch on device "auto")."""
    if value is None:
        return Compute()
    if isinstance(value, Compute):
        return value
    if isinstance(value, str) and value in BACKENDS:
        return Compute(device="cpu" if value == "numba" else "auto", backend=value)
    raise WeightscopeError(f"backend must be one of {', '.join(BACKENDS)} or a weightscope.core.compute.Compute, "
                           f"got {value!r}")


def return_freed_memory() -> bool:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``); call it after freeing large
    tensors (a released text tower, a finished block): glibc keeps freed heap blocks (see :func:`tune_allocator`),
    counted as resident. Returns whether anything was returned (False off glibc)."""
    import ctypes

    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):   # not glibc (macOS, musl): nothing to trim
        return False


def tune_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 64 << 20) -> bool:
    """Set glibc's malloc for a process that allocates the same large temporaries over and over (a text tower's
    batches, a solver's blocks): blocks below ``mmap_threshold`` come from the heap and up to ``trim_threshold`` of
    freed heap stays there for reuse. With glibc's defaults each freed block went back to the system and the next
    batch faulted it in afresh: 20% of an embedding's time (ViT-B-16, 10,000 concepts: 22 s -> 17.6 s, a fifth of
    the page faults, measured). Process-wide: use it through :func:`reused_temporaries`, which limits it to the loop
    that gains from it. Returns whether it was set (glibc only)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        # -3, -1: M_MMAP_THRESHOLD, M_TRIM_THRESHOLD (malloc.h)
        return bool(libc.mallopt(-3, int(mmap_threshold)) and libc.mallopt(-1, int(trim_threshold)))
    except (OSError, AttributeError):   # not glibc (macOS, musl): nothing to tune
        return False


@contextlib.contextmanager
def reused_temporaries():
    """Within the block, :func:`tune_allocator`'s setting (large temporaries reused from the heap: for a loop of
    same-sized batches); after it, freed blocks go back to the system promptly (glibc's static thresholds of
    128 KiB) and what the heap kept is handed back (:func:`return_freed_memory`). Kept to the loop that gains from
    it: held for a whole run, the kept heap added 1-2% to the peak of a small inspect (measured)."""
    tune_allocator()
    try:
        yield
    finally:
        tune_allocator(128 << 10, 128 << 10)
        return_freed_memory()
