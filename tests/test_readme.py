"""Every Python block of the README runs on its own (issue 31): one after another, each in a new process, in one
fresh temporary folder, as a reader copying them in order would run them."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"(?ms)^```python\n(.*?)^```", text)


def test_readme_python_blocks_run_alone_in_order(tmp_path, monkeypatch):
    blocks = python_blocks((REPO / "README.md").read_text())
    assert len(blocks) >= 3
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "WEIGHTSCOPE_CACHE_DIR": str(tmp_path / "cache")}
    work = tmp_path / "work"
    work.mkdir()
    for i, code in enumerate(blocks):
        proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"README Python block {i + 1} failed:\n{code}\n{proc.stderr[-3000:]}"
        assert proc.stdout.strip(), f"README Python block {i + 1} printed nothing"
    # what the blocks say they write, they wrote, and only into the folder they ran in
    assert {"inspection.json", "api-edited.safetensors", "api-edited.safetensors.json"} <= {
        p.name for p in work.iterdir()}
