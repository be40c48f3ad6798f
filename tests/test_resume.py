"""A whole-model inspect killed midway resumes from its per-layer partial results and gives the result of an
uninterrupted run; partial results are keyed by their inputs, recomputed when damaged, and --no-resume starts over."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from weightscope.analyses import inspection
from weightscope.analyses.inspection import inspect_model
from weightscope.concepts.explainer import ConceptExplainer
from weightscope.models.load import load_model

from conftest import TINY_CFG, make_model, register_config

VOCAB = ["red", "blue", "green", "circle", "square", "triangle", "large", "small", "cat", "dog", "sky", "tree"]
N_LAYERS = 6
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def deep_model_file(tmp_path_factory):
    """A 6-layer tiny CLIP saved with torch.save, so that a child process loads the very same weights."""
    folder = tmp_path_factory.mktemp("deep")
    cfg = {**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], "layers": N_LAYERS}}
    name = register_config(folder, "ws-test-deep", cfg)
    path = folder / "model.pt"
    torch.save(make_model(name), path)
    return path


def _model(path):
    return load_model(torch.load(path, weights_only=False))


def _run(path, cache, k=2, **kw):
    return inspect_model(_model(path), ConceptExplainer(VOCAB, k=k, cache_dir=cache), n_directions=3, progress=False,
                         **kw)


def _partials(cache: Path) -> list[Path]:
    return sorted(cache.glob("partial/*/layer-*.json"))


CHILD = """
import sys, time, torch
from weightscope.analyses import inspection
from weightscope.models.load import load_model
from weightscope.concepts.explainer import ConceptExplainer
real = inspection._explain_layer
def slow(*a, **k):
    out = real(*a, **k)
    time.sleep(0.4)  # room for the parent to kill it between (or during) layers
    return out
inspection._explain_layer = slow
vocab = sys.argv[3].split(",")
inspection.inspect_model(load_model(torch.load(sys.argv[1], weights_only=False)),
                         ConceptExplainer(vocab, k=2, cache_dir=sys.argv[2]), n_directions=3, progress=False)
"""


def test_killed_run_resumes_and_equals_an_uninterrupted_run(deep_model_file, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(deep_model_file), str(cache), ",".join(VOCAB)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(_partials(cache)) < 2 and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done = len(_partials(cache))
    assert 2 <= done < N_LAYERS, "the child was not killed midway"

    calls = []
    real = inspection._explain_layer
    monkeypatch.setattr(inspection, "_explain_layer", lambda w, l, *a: calls.append(l) or real(w, l, *a))
    resumed = _run(deep_model_file, cache)
    err = capsys.readouterr().err
    assert f"resuming: {done} of {N_LAYERS} layers already done" in err
    assert len(calls) == N_LAYERS - done           # only the missing layers were computed
    assert _partials(cache) == []                  # a completed run leaves no partial results
    fresh = _run(deep_model_file, tmp_path / "fresh", resume=False)
    assert resumed.to_dict() == fresh.to_dict()


def test_interrupted_run_resumes_damaged_layers_are_recomputed_and_no_resume_starts_over(deep_model_file, tmp_path,
                                                                                          capsys, monkeypatch):
    cache = tmp_path / "cache"
    real = inspection._explain_layer
    calls = []

    def interrupt_at_layer_3(w, l, *a):
        if l == 3:
            raise KeyboardInterrupt
        calls.append(l)
        return real(w, l, *a)

    monkeypatch.setattr(inspection, "_explain_layer", interrupt_at_layer_3)
    with pytest.raises(KeyboardInterrupt):
        _run(deep_model_file, cache)
    assert calls == [0, 1, 2] and len(_partials(cache)) == 3

    files = _partials(cache)
    files[1].write_text(files[1].read_text()[:-40])           # a torn file
    monkeypatch.setattr(inspection, "_explain_layer", lambda w, l, *a: calls.append(l) or real(w, l, *a))
    calls.clear()
    with pytest.warns(UserWarning, match="damaged"):
        resumed = _run(deep_model_file, cache)
    assert sorted(calls) == [1, 3, 4, 5]
    assert "resuming: 2 of 6 layers already done (0, 2)" in capsys.readouterr().err

    # other settings: another key, nothing reused; --no-resume: nothing reused and nothing left behind
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(inspection, "_explain_layer", interrupt_at_layer_3)
        _run(deep_model_file, cache)
    monkeypatch.setattr(inspection, "_explain_layer", lambda w, l, *a: calls.append(l) or real(w, l, *a))
    calls.clear()
    other = _run(deep_model_file, cache, k=3)
    assert sorted(calls) == list(range(N_LAYERS)) and other.settings["k"] == 3
    calls.clear()
    mine = _model(deep_model_file)
    again = inspect_model(mine, ConceptExplainer(VOCAB, k=2, cache_dir=cache), n_directions=3, progress=False,
                          resume=False)
    assert all(p.numel() for p in mine.model.parameters())  # a model the caller passes is left intact
    assert sorted(calls) == list(range(N_LAYERS))
    assert "resuming" not in capsys.readouterr().err
    assert again.to_dict() == resumed.to_dict()
    assert _partials(cache) == []
