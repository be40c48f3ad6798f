"""CLI subcommands, one module each (see weightscope.cli), and the one dialect they share.

Every option that more than one subcommand takes is defined here, once, so that its name, type and meaning are
the same everywhere (tests/test_cli.py checks this by introspection of every registered subcommand):

    MODEL [--pretrained TAG | --checkpoint PATH]   add_model_arguments
    --out DIR [--overwrite]                        add_output_argument (default weightscope-out/<command>;
                                                   edit: the checkpoint PATH, default weightscope-out/edit/...)
    --image FILE|DIR (repeatable)                  add_image_argument (read by image_paths)
    --text TEXT|FILE (repeatable)                  add_text_argument (read by text_list)
    --vocab SPEC                                   add_vocab_argument
    --layers LIST --heads LIST                     add_layer_head_arguments (parsed by parse_indices)
    --method M --k K --lambda L --directions N     add_solver_arguments (--directions alone: add_directions_argument)
    --quiet                                        add_quiet_argument (no progress bars; results always print)
    --device D --precision P --backend B           add_compute_arguments (read by explainer_from_args)
    --no-resume                                    add_resume_argument

Nothing here imports torch, numpy or open_clip: ``weightscope --help`` must stay fast.
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
from pathlib import Path

from ..core.errors import WeightscopeError

OUT_ROOT = "weightscope-out"
EXIT_CODES = "exit status: 0 done; 2 bad input or environment (one line on stderr says what); 1 a bug (please report)"
SOLVER_METHODS = ("comp", "nnomp", "omp", "mp", "topk")
_RANGE = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?$")


def close_matches(word: str, choices, n: int = 3) -> str:
    """'; did you mean X, Y?' for the choices close to ``word`` (empty when none is close)."""
    near = difflib.get_close_matches(str(word), [str(c) for c in choices], n=n, cutoff=0.6)
    return f"; did you mean {', '.join(near)}?" if near else ""


class Parser(argparse.ArgumentParser):
    """argparse without prefix matching (``--layer`` is not ``--layers``) and with one-line errors that
    suggest close option names and choices. Subparsers inherit the class."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def option_names(self) -> list[str]:
        return [s for a in self._actions for s in a.option_strings]

    def error(self, message: str):
        m = re.match(r"unrecognized arguments: (.*)", message)
        if m:
            hints = [f"{w}{close_matches(w.split('=')[0], self.option_names(), n=2)}"
                     for w in m.group(1).split() if w.startswith("-")]
            if hints:
                message = f"unrecognized option {'; '.join(hints)}" + (
                    f" (all: {m.group(1)})" if len(m.group(1).split()) > len(hints) else "")
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2))
            message = message + close_matches(m.group(1), choices).replace("; ", " - ", 1)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    """MODEL [--pretrained TAG | --checkpoint PATH] [--tokenizer PATH] [--trust-checkpoint], as load_model takes them."""
    p.add_argument("model", nargs="?", default=None, metavar="MODEL",
                   help="open_clip model name, or a checkpoint weightscope wrote "
                        "(default: the bundled shapes-world model)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pretrained", metavar="TAG", help="open_clip pretrained tag (bundled model: base or tuned)")
    src.add_argument("--checkpoint", metavar="PATH", help="local checkpoint file (.safetensors, .pt, .bin)")
    p.add_argument("--tokenizer", metavar="PATH", default=None,
                   help="folder of a downloaded tokenizer (tokenizer.json or spiece.model): SigLIP models, whose "
                        "tokenizer open_clip fetches from the Hugging Face hub, need it offline (default: the model's own)")
    add_trust_argument(p)


def add_trust_argument(p: argparse.ArgumentParser) -> None:
    """--trust-checkpoint: unpickle torch files in full (never the default)."""
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle a torch checkpoint in full (it holds objects other than tensors); "
                        "only for files you trust: unpickling can run code")


def default_out(command: str) -> str:
    """Where a command writes when --out is not given: weightscope-out/<command>."""
    return f"{OUT_ROOT}/{command}"


def add_output_argument(p: argparse.ArgumentParser, command: str, *, kind: str = "dir", default: str | None = None,
                        help: str | None = None, overwrite: bool = False) -> None:
    """--out DIR: the folder the command's outputs go into, default ``weightscope-out/<command>`` (kind "dir"), or
    --out PATH for a command that writes one file (kind "file", e.g. edit's checkpoint, default ``default``);
    [--overwrite]."""
    if default is None and kind == "dir":
        default = default_out(command)
    p.add_argument("--out", metavar="DIR" if kind == "dir" else "PATH", default=default,
                   help=(help or "output folder") + (f" (default {default})" if default else ""))
    if overwrite:
        p.add_argument("--overwrite", action="store_true",
                       help="replace existing outputs (never an input of the run)")


def add_image_argument(p: argparse.ArgumentParser, help: str) -> None:
    """--image FILE|DIR, repeatable: image files, or folders of images (read by :func:`image_paths`)."""
    p.add_argument("--image", metavar="FILE|DIR", action="append", default=None,
                   help=f"{help} (an image file or a folder of images; repeatable)")


def add_text_argument(p: argparse.ArgumentParser, help: str) -> None:
    """--text TEXT|FILE, repeatable: a text, or a file of texts one per line (read by :func:`text_list`)."""
    p.add_argument("--text", metavar="TEXT|FILE", action="append", default=None,
                   help=f"{help} (a text, or a .txt file with one text per line; repeatable)")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def image_paths(values: list[str] | None) -> list[Path]:
    """The image files --image names, in order: each value a file, or a folder whose images (recursively, sorted)
    are taken. Raises WeightscopeError for a path that does not exist or a folder without images."""
    out: list[Path] = []
    for v in values or ():
        p = Path(v)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            if not found:
                raise WeightscopeError(f"--image {p}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise WeightscopeError(f"--image {p}: no such file or folder; give an image file or a folder of images")
    return out


def text_list(values: list[str] | None) -> list[str]:
    """The texts --text gives, in order: a value naming an existing .txt file stands for its lines (see
    analyses.sing.inputs.read_texts), any other value is a text itself."""
    out: list[str] = []
    for v in values or ():
        if str(v).lower().endswith(".txt") or os.path.isfile(v):
            from ..analyses.sing.inputs import read_texts

            out.extend(read_texts(v))
        else:
            out.append(" ".join(str(v).split()))
    return out


def add_vocab_argument(p: argparse.ArgumentParser, default: str | None = None, help: str | None = None) -> None:
    """--vocab SPEC: built-in names or files with optional limits, comma separated ('shapes_world,general:5000')."""
    p.add_argument("--vocab", metavar="SPEC", default=default, help=help or (
        "concept vocabulary: built-in names or text files, comma separated, each with an optional :LIMIT, "
        "e.g. 'shapes_world,general:5000' (default: that for the bundled model, 'general' otherwise)"))


def add_layer_head_arguments(p: argparse.ArgumentParser, what: str = "analyse") -> None:
    """--layers LIST and --heads LIST, comma lists or ranges read by :func:`parse_indices`."""
    p.add_argument("--layers", metavar="LIST", help=f"layers to {what}, e.g. 10,11 or 0-3 or -1 (default: all)")
    p.add_argument("--heads", metavar="LIST", help=f"heads to {what}, e.g. 0,2 or 0-3 (default: all)")


def add_solver_arguments(p: argparse.ArgumentParser) -> None:
    """--method, --k, --lambda, --directions: how each singular direction is explained with concepts."""
    p.add_argument("--method", default="comp", choices=SOLVER_METHODS, metavar="METHOD",
                   help=f"sparse solver: {', '.join(SOLVER_METHODS)} (default comp)")
    p.add_argument("--k", type=int, default=5, help="concepts per direction (default 5)")
    p.add_argument("--lambda", dest="lam", type=float, default=0.3, help="COMP coherence weight (default 0.3)")
    add_directions_argument(p)


def add_compute_arguments(p: argparse.ArgumentParser) -> None:
    """--device, --precision, --backend: where the text tower, the solvers and the SVDs run (METHODS.md s.14)."""
    p.add_argument("--device", default="auto", choices=("cpu", "cuda", "mps", "auto"), metavar="DEVICE",
                   help="cpu, cuda, mps or auto (default auto: cuda if present, else mps, else cpu)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), metavar="P",
                   help="text tower and correlation products: fp32 (default), bf16 or fp16; least squares and "
                        "SVD cores stay float64 where the device has it")
    p.add_argument("--backend", default=None, choices=("numba", "torch"), metavar="B",
                   help="sparse solvers: numba (CPU) or torch (any device) (default: numba on the CPU, torch "
                        "elsewhere)")


def add_resume_argument(p: argparse.ArgumentParser) -> None:
    """--no-resume: ignore (and remove) the partial results of an interrupted run with the same inputs."""
    p.add_argument("--no-resume", action="store_true",
                   help="start over instead of resuming an interrupted run with the same inputs")


def add_directions_argument(p: argparse.ArgumentParser) -> None:
    """--directions N: explain only each head's N leading singular directions."""
    p.add_argument("--directions", type=int, default=None, metavar="N",
                   help="explain only the leading N directions of each head (default: all)")


def add_quiet_argument(p: argparse.ArgumentParser) -> None:
    """--quiet: no progress bars (the results are printed all the same)."""
    p.add_argument("--quiet", action="store_true", help="no progress bars (results are still printed)")


def check_solver_arguments(args: argparse.Namespace) -> None:
    """Cheap checks of the solver options, before any model is loaded."""
    import math

    if getattr(args, "k", None) is not None and args.k < 1:
        raise WeightscopeError(f"--k must be at least 1, got {args.k}")
    if getattr(args, "lam", None) is not None and not (math.isfinite(args.lam) and args.lam >= 0):
        raise WeightscopeError(f"--lambda must be a finite number >= 0, got {args.lam}")
    if getattr(args, "directions", None) is not None and args.directions < 1:
        raise WeightscopeError(f"--directions must be at least 1, got {args.directions}")


def explainer_from_args(args: argparse.Namespace):
    """The one ``ConceptExplainer`` of a command, from its shared options (--vocab, --method, --k, --lambda,
    --normalize); what a command does not offer keeps the library's default, and None leaves the choice of
    vocabulary and normalisation to the analysis (its default for the model)."""
    from ..concepts.explainer import DEFAULT_K, DEFAULT_LAM, DEFAULT_METHOD, ConceptExplainer

    explainer = ConceptExplainer(vocabulary=getattr(args, "vocab", None), method=getattr(args, "method", DEFAULT_METHOD),
                                 k=getattr(args, "k", DEFAULT_K), lam=getattr(args, "lam", DEFAULT_LAM),
                                 normalize=getattr(args, "normalize", None), device=getattr(args, "device", "cpu"),
                                 precision=getattr(args, "precision", "fp32"), backend=getattr(args, "backend", None))
    explainer.compute.solver_backend()   # a device that is not here, or numba off the CPU: one line, now
    return explainer


# ------------------------------------------------------------------------------------------ inputs vs outputs

def _spec_path(text) -> Path | None:
    """The file or folder a model spec names, if any: 'PATH', or 'NAME:PATH' (compare's spec grammar)."""
    if not text:
        return None
    text = str(text)
    if os.path.exists(text):
        return Path(text)
    _, sep, rest = text.partition(":")
    return Path(rest) if sep and rest and os.path.exists(rest) else None


def run_inputs(args: argparse.Namespace) -> list[Path]:
    """Every file or folder a command reads, from the shared options: checkpoints by any route (MODEL, --pretrained,
    --checkpoint, compare's specs), vocabulary files, --inspection, --image-mean, the analyses' input files
    (MODEL_B, --classifier, --similarity, --confusion, --synsets, --classes, --image, --text files, --gallery,
    --manifest, --translator), and the shipped checkpoints."""
    found: list[Path] = []  # fileio.refuse_inputs adds the shipped checkpoints itself
    for name in ("model", "pretrained", "checkpoint", "base", "inspection", "image_mean", "model_b", "classifier",
                 "similarity", "confusion", "synsets", "classes", "gallery", "manifest", "translator", "tokenizer",
                 "cluster_config"):
        p = _spec_path(getattr(args, name, None))
        if p is not None:
            found.append(p)
    for name in ("image", "text"):  # repeatable options
        for value in getattr(args, name, None) or ():
            p = _spec_path(value)
            if p is not None:
                found.append(p)
    for spec in getattr(args, "tuned", None) or ():
        p = _spec_path(spec)
        if p is not None:
            found.append(p)
    vocab = getattr(args, "vocab", None)
    if isinstance(vocab, str):
        from ..concepts.vocab import vocabulary_files

        found.extend(vocabulary_files(vocab))
    return found


def check_outputs(args: argparse.Namespace, outputs: list[str | Path], kind: str = "file") -> list[Path]:
    """Before any expensive work: each output can be written (see fileio.check_writable) and none of them is, or
    lies inside, anything the run reads (realpath or same inode; --overwrite never lifts this)."""
    from ..core.fileio import check_writable, refuse_inputs

    outs = [Path(o) for o in outputs]
    out_opt = getattr(args, "out", None)
    if out_opt is not None:
        check_writable(out_opt, kind=kind)
    refuse_inputs(outs, run_inputs(args))
    return outs

