"""The one atomic writer: no reader sees a half-written file, a run's outputs appear together, the umask holds.

- :func:`write_atomic` writes one file through a temporary file in the same folder and ``os.replace``.
- Inside ``with outputs():`` every :func:`write_atomic` (and :func:`dump_json`) is only staged; when the block
  ends without an exception all staged files are committed together, and if any of them cannot be put in
  place the ones already replaced get their previous content back. A block that raises writes nothing, so a
  failed run leaves earlier outputs as they were.
- Every file gets mode ``0o666 & ~umask`` (``mkstemp`` alone would give 0600), also when it replaces a file.
- OS failures (read-only folder, full disk, a file where a folder is needed) become a one-line
  :class:`WriteError` naming the path (a WeightscopeError and an OSError); :func:`check_writable` finds
  them before any expensive work.
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import WeightscopeError

# the checkpoints shipped inside the package: no output may ever replace them
SHIPPED = Path(__file__).resolve().parents[1] / "shapes" / "assets"
# what the running command reads (set by the CLI for every command): no write may replace one of them
_READS: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar("weightscope_reads", default=())
_STAGED: contextvars.ContextVar[dict[Path, bytes] | None] = contextvars.ContextVar("weightscope_staged", default=None)


def process_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class WriteError(WeightscopeError, OSError):
    """An output could not be written: one line for people (``str``), and an OSError for code that handles the
    environment (``errno``, ``strerror``, ``filename`` of the underlying failure)."""

    def __init__(self, message: str, err: OSError, path: str | Path):
        super().__init__(message)
        self.errno, self.strerror, self.filename = err.errno, err.strerror, str(path)

    def __str__(self) -> str:
        return self.args[0]


def _hint(err: OSError) -> str:
    """What an OS error means for an output and what to do, in a few words."""
    hints = {
        errno.ENOSPC: "the disk is full; free space or choose another folder",
        errno.EFBIG: "the file size limit (ulimit -f) or the disk is full; free space or raise the limit",
        errno.EDQUOT: "the disk quota is exhausted; free space or choose another folder",
        errno.EROFS: "the file system is read-only; choose a writable folder",
        errno.EACCES: "permission denied; choose a folder you can write to",
        errno.EPERM: "operation not permitted; choose a folder you can write to",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EISDIR: "it is a folder, not a file",
        errno.EEXIST: "a file is where a folder is needed",
        errno.ENOENT: "the folder does not exist and cannot be created there",
    }
    return hints.get(err.errno, err.strerror or type(err).__name__)


def os_problem(err: OSError, path: str | Path, doing: str = "write") -> WriteError:
    """One line for an OS failure on ``path``: what failed and, for the common causes, what to do."""
    return WriteError(f"cannot {doing} {path}: {_hint(err)}", err, path)


def _deepest_existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if os.path.lexists(p):
            return p
    return Path(".")


def check_writable(path: str | Path, kind: str = "file", what: str = "--out") -> Path:
    """Fail early, with one line, if ``path`` cannot become an output ``kind`` ("file" or "dir").

    Checks that no part of the path is a file, that an existing ``path`` is of the right kind, and that a
    file can really be created in the deepest existing folder (a probe file is made and removed: permission
    bits alone do not tell for root, /proc or read-only mounts). Returns ``path`` as a Path.
    """
    path = Path(path)
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', not {kind!r}")
    if path.exists():
        if kind == "dir" and not path.is_dir():
            raise WeightscopeError(f"{what} {path} is an existing file; it must name a folder (the outputs go inside)")
        if kind == "file" and path.is_dir():
            raise WeightscopeError(f"{what} {path} is an existing folder; it must name a file")
    base = _deepest_existing(path if kind == "dir" else path.parent)
    if not base.is_dir():
        raise WeightscopeError(f"{what} {path}: {base} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".weightscope-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        why = "it does not take new files" if err.errno == errno.ENOENT else _hint(err)
        raise WriteError(f"{what} {path}: cannot create files in {base} ({why})", err, base) from None
    return path


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_inputs(outputs, inputs) -> None:
    """Raise WeightscopeError if an output would replace something a run reads.

    outputs: paths to be written; inputs: files and folders read. An output is refused when it resolves
    (realpath) to an input file, is the same inode (a hard link), or lies inside an input folder. The
    checkpoints shipped in the package are always inputs. No option lifts this.
    """
    ins = [Path(p) for p in (*inputs, SHIPPED) if p is not None and os.path.lexists(p)]
    for out in map(Path, outputs):
        real = Path(os.path.realpath(out))
        for inp in ins:
            inp_real = Path(os.path.realpath(inp))
            if inp_real.is_dir():
                if (real == inp_real or inp_real in real.parents) and inp_real == SHIPPED:
                    raise WeightscopeError(f"refusing to write {out}: it is inside {SHIPPED}, the checkpoints "
                                           "shipped with weightscope; choose another output path")
                if real == inp_real or inp_real in real.parents:
                    raise WeightscopeError(f"refusing to write {out}: it is inside {inp}, which this run reads; "
                                           "choose an output outside every input folder")
            elif real == inp_real or _same(out, inp):
                raise WeightscopeError(f"refusing to write {out}: it is {inp}, which this run reads (an input "
                                       "checkpoint, vocabulary, inspection or image file is never replaced, even "
                                       "with --overwrite); choose another output path")


@contextlib.contextmanager
def reading(paths) -> Iterator[None]:
    """Inside the block every write is refused (as by :func:`refuse_inputs`) if it would replace one of
    ``paths``; the command line wraps each command in it, so a command cannot forget its inputs."""
    token = _READS.set((*_READS.get(), *(Path(p) for p in paths if p is not None)))
    try:
        yield
    finally:
        _READS.reset(token)


@contextlib.contextmanager
def outputs() -> Iterator[dict[Path, bytes]]:
    """Stage every :func:`write_atomic` inside the block; commit them together when it ends without error.

    Yields the staging dict {path: bytes} (read-only use). Nested blocks join the outermost one.
    """
    if _STAGED.get() is not None:
        yield _STAGED.get()
        return
    staged: dict[Path, bytes] = {}
    token = _STAGED.set(staged)
    try:
        yield staged
    finally:
        _STAGED.reset(token)
    _commit(staged)


def write_atomic(path: str | Path, data: str | bytes, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (inside :func:`outputs`: staged); returns ``path`` as a Path.

    Raises WeightscopeError if ``path`` exists and not ``overwrite``, or naming the path when the OS refuses.
    """
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise WeightscopeError(f"{path} already exists; choose another path or pass overwrite=True")
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    staged = _STAGED.get()
    if staged is not None:
        staged[path] = raw
    else:
        _commit({path: raw})
    return path


def _write_temp(path: Path, data: bytes, mode: int) -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _commit(files: dict[Path, bytes]) -> None:
    """Put every file in place, or none: temporaries first, then renames with the old files kept until done."""
    if not files:
        return
    refuse_inputs(files, _READS.get())
    mode = 0o666 & ~process_umask()
    temps: dict[Path, str] = {}
    made_dirs: list[Path] = []
    backups: dict[Path, str] = {}
    placed: list[Path] = []
    current = next(iter(files))
    try:
        for path, data in files.items():
            current = path
            missing = [p for p in (path.parent, *path.parent.parents) if not os.path.lexists(p)]
            path.parent.mkdir(parents=True, exist_ok=True)
            made_dirs.extend(reversed(missing))
            if path.is_dir():
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
            temps[path] = _write_temp(path, data, mode)
        for path, tmp in temps.items():
            current = path
            if os.path.lexists(path):
                backups[path] = tmp + ".old"
                try:
                    os.link(path, backups[path])
                except OSError:  # no hard links here: a copy serves as well
                    shutil.copy2(path, backups[path])
            os.replace(tmp, path)
            placed.append(path)
    except BaseException as err:
        for path in reversed(placed):
            with contextlib.suppress(OSError):
                if path in backups:
                    os.replace(backups.pop(path), path)
                else:
                    path.unlink()
        for tmp in (*temps.values(), *backups.values()):
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for d in reversed(made_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()
        if isinstance(err, OSError):
            raise os_problem(err, current) from None
        raise
    for old in backups.values():
        with contextlib.suppress(OSError):
            os.unlink(old)


def dump_json(data: dict, path: str | Path | None = None) -> str:
    """``data`` as indented JSON text; also written atomically to ``path`` when given."""
    text = json.dumps(data, indent=1)
    if path is not None:
        write_atomic(path, text)
    return text


def parse_json(text_or_path: str | Path, what: str, build: Callable[[Any], Any]):
    """``build(parsed JSON)`` from JSON text or a file path; bad input -> one-line WeightscopeError naming ``what``."""
    text = str(text_or_path)
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise WeightscopeError(f"{what} JSON file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise WeightscopeError(f"cannot read {what} JSON {path}: {getattr(err, 'strerror', None) or err}") from None
    try:
        return build(json.loads(text))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise WeightscopeError(f"not a weightscope {what} JSON ({type(err).__name__}: {err})") from None


def json_default(x):
    """``json.dumps(default=...)`` for numpy scalars and arrays and paths (the sidecars and records we write)."""
    import numpy as np  # here, not at the top: the CLI's --help imports this module and must stay fast

    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
