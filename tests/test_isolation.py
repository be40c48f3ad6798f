"""The test suite leaves the user's machine as it found it (issue 31): a test module run with HOME, the temp folder
and the working folder pointed at fresh, empty folders leaves nothing in any of them: no embedding cache in
~/.cache/weightscope, no dask-scratch-space in the temp folder, no pytest temp folders, no outputs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# a test that embeds concepts through the default cache path (the suite wrote into ~/.cache/weightscope before) and
# a CLI run that writes its default output folder and draws figures (matplotlib's caches)
MODULES = ["tests/test_embed.py::test_builtin_vocabulary_by_name_with_splice",
           "tests/test_cli.py::test_one_dialect_issue31_default_output_folder_and_quiet[inspect]"]


def everything_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_test_run_leaves_home_temp_and_working_folder_empty(tmp_path):
    home, tmp, cwd = tmp_path / "home", tmp_path / "tmp", tmp_path / "cwd"
    for d in (home, tmp, cwd):
        d.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("WEIGHTSCOPE_CACHE_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR",
                        "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    env.update(HOME=str(home), TMPDIR=str(tmp), TEMP=str(tmp), TMP=str(tmp), PYTHONPATH=str(REPO),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO),
                           "-c", str(REPO / "pyproject.toml"), *(str(REPO / m) for m in MODULES)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 passed" in proc.stdout, proc.stdout[-1000:]
    assert everything_under(home) == [], ("written into HOME", everything_under(home))
    assert everything_under(cwd) == [], "written into the working folder"
    assert everything_under(tmp) == [], ("left in the temp folder", everything_under(tmp)[:20])


def test_dask_scratch_space_goes_to_a_pytest_folder(tmp_path_factory):
    """Dask's workers put their dask-scratch-space under temporary-directory (else the system temp folder, where
    the suite used to leave it); conftest points it into pytest's own temporary folders."""
    dask = __import__("pytest").importorskip("dask")
    scratch = Path(dask.config.get("temporary-directory"))
    assert scratch.is_dir() and tmp_path_factory.getbasetemp() in scratch.parents
