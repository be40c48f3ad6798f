"""The one atomic writer: the umask holds, a set of outputs lands together or not at all, inputs are never
replaced, and OS failures are one line naming the path (issue 12 kinds 5-7, issue 13 kind 3)."""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from weightscope.core import fileio
from weightscope.core.errors import WeightscopeError
from weightscope.core.fileio import SHIPPED, check_writable, outputs, refuse_inputs, write_atomic

REPO = Path(__file__).resolve().parents[1]


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Run with a chosen umask: yields a setter; the old umask is restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


# ------------------------------------------------------------------------------------ kind 7: the umask

@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027])
def test_outputs_ignore_umask_kind7_new_files(tmp_path, umask, mask):
    umask(mask)
    assert fileio.process_umask() == mask           # read without changing it
    p = write_atomic(tmp_path / "new" / "a.json", "{}")
    assert mode(p) == 0o666 & ~mask
    with outputs():
        write_atomic(tmp_path / "set" / "b.html", "<p>")
        write_atomic(tmp_path / "set" / "c.bin", b"\0")
    assert mode(tmp_path / "set" / "b.html") == mode(tmp_path / "set" / "c.bin") == 0o666 & ~mask
    assert mode(tmp_path / "set") == 0o777 & ~mask  # a folder made for the outputs follows the umask too


def test_outputs_ignore_umask_kind7_overwritten_0644_file(tmp_path, umask):
    """The issue's member: an existing 0644 file that is replaced must not become 0600."""
    p = tmp_path / "report.html"
    p.write_text("old")
    os.chmod(p, 0o644)
    umask(0o027)
    write_atomic(p, "new")
    assert p.read_text() == "new" and mode(p) == 0o640


def test_outputs_ignore_umask_kind7_embedding_cache(tmp_path, umask, tiny_model, tiny_name):
    """Another member: the concept-embedding cache goes through the same writer."""
    import open_clip

    from weightscope import embed_concepts

    umask(0o002)
    embed_concepts(tiny_model, open_clip.get_tokenizer(tiny_name), ["red", "blue"], model_name=tiny_name,
                   cache_dir=tmp_path / "cache", progress=False)
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert files and all(mode(p) == 0o664 for p in files)


# ------------------------------------------------------------------------- kind 6: together or not at all

def test_half_written_outputs_kind6_failed_block_writes_nothing(tmp_path):
    old = tmp_path / "d"
    old.mkdir()
    (old / "inspection.json").write_text("old json")
    (old / "report.html").write_text("old html")
    before = {p.name: sha(p) for p in old.iterdir()}
    with pytest.raises(RuntimeError):
        with outputs():
            write_atomic(old / "inspection.json", "new json")
            write_atomic(old / "extra.png", b"png")
            raise RuntimeError("the report failed")
    assert {p.name: sha(p) for p in old.iterdir()} == before       # nothing new, nothing changed, no temp files
    with pytest.raises(RuntimeError):
        with outputs():
            write_atomic(tmp_path / "fresh" / "a.json", "x")
            raise RuntimeError
    assert not (tmp_path / "fresh").exists()


def test_half_written_outputs_kind6_rename_failure_rolls_back(tmp_path, monkeypatch):
    """A failure while the files are put in place restores the ones already replaced and removes new ones."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.json").write_text("old a")
    real_replace = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", flaky)
    with pytest.raises(WeightscopeError, match=r"cannot write .*b\.html: the disk is full") as exc:
        with outputs():
            write_atomic(d / "a.json", "new a")
            write_atomic(d / "b.html", "new b")
    monkeypatch.undo()
    assert isinstance(exc.value, OSError) and exc.value.errno == 28   # code that handles OSError still can
    assert sorted(p.name for p in d.iterdir()) == ["a.json"] and (d / "a.json").read_text() == "old a"


def test_half_written_outputs_kind6_checkpoint_and_sidecar(tmp_path, tiny_model):
    """save_checkpoint writes checkpoint and record as one unit: a folder where the record goes -> neither."""
    from weightscope import save_checkpoint

    (tmp_path / "e.safetensors.json").mkdir()
    with pytest.raises(WeightscopeError):
        save_checkpoint(tiny_model, tmp_path / "e.safetensors", overwrite=True)
    assert not (tmp_path / "e.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.safetensors.json"]


# ------------------------------------------------------------------------------ kind 5: inputs are kept

def test_inputs_get_overwritten_kind5_every_alias(tmp_path):
    src = tmp_path / "victim.safetensors"
    src.write_bytes(b"weights")
    (tmp_path / "link.safetensors").symlink_to(src)
    os.link(src, tmp_path / "hard.safetensors")
    images = tmp_path / "images"
    images.mkdir()
    for out in (src, tmp_path / "link.safetensors", tmp_path / "hard.safetensors", tmp_path / "." / "victim.safetensors"):
        with pytest.raises(WeightscopeError, match="refusing to write"):
            refuse_inputs([out], [src])
    with pytest.raises(WeightscopeError, match="inside"):
        refuse_inputs([images / "report.html"], [images])
    with pytest.raises(WeightscopeError, match="shipped with weightscope"):
        refuse_inputs([SHIPPED / "shapes-vit-base.safetensors"], [])
    refuse_inputs([tmp_path / "other.safetensors", tmp_path / "images.html"], [src, images])  # neighbours are fine
    assert src.read_bytes() == b"weights"


def test_inputs_get_overwritten_kind5_shipped_checkpoints_guarded_by_the_writer():
    """Even a direct write_atomic (any future writer) cannot replace a shipped checkpoint."""
    target = SHIPPED / "shapes-vit-base.safetensors"
    before = sha(target)
    with pytest.raises(WeightscopeError, match="shipped with weightscope"):
        write_atomic(target, b"not weights")
    assert sha(target) == before


# ----------------------------------------------------------------- issue 13 kind 3: OS failures, early

def test_os_failures_kind3_check_writable(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(WeightscopeError, match="is an existing file; it must name a folder"):
        check_writable(afile, "dir")
    with pytest.raises(WeightscopeError, match="is an existing folder; it must name a file"):
        check_writable(tmp_path, "file")
    with pytest.raises(WeightscopeError, match="afile is a file, not a folder"):
        check_writable(afile / "sub" / "x.safetensors", "file")
    with pytest.raises(WeightscopeError, match="cannot create files in /proc"):
        check_writable("/proc/weightscope-out", "dir")
    assert check_writable(tmp_path / "new" / "deeper", "dir") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_os_failures_kind3_full_disk_is_one_line(tmp_path):
    """ulimit -f 20 (20 KiB): the writer gets EFBIG (SIGXFSZ ignored) and says so, leaving no temporary file."""
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 1024, 20 * 1024))\n"
            "from weightscope.core.fileio import write_atomic\n"
            "from weightscope.core.errors import WeightscopeError\n"
            "try:\n"
            f"    write_atomic({str(tmp_path / 'big.bin')!r}, bytes(100_000))\n"
            "except WeightscopeError as err:\n"
            "    print(err, file=sys.stderr); sys.exit(2)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "big.bin" in proc.stderr and "file size limit" in proc.stderr
    assert list(tmp_path.iterdir()) == []
