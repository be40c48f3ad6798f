"""Random-init models are drawn with a fixed seed, part by part: the same weights in every run, each vision block
independent of the others and built only when an analysis asks for it; inspect_model holds one block at a time."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from weightscope.analyses import inspection
from weightscope.analyses.inspection import inspect_model
from weightscope.concepts.explainer import ConceptExplainer
from weightscope.models.adapters import describe_model, head_count
from weightscope.models.lazy import ensure_blocks, release_blocks, unbuilt
from weightscope.models.load import load_model

from conftest import TINY_CFG, make_model, register_config

VOCAB = ["red", "blue", "green", "circle", "square", "triangle", "large", "small", "cat", "dog", "sky", "tree"]
ROOT = Path(__file__).resolve().parents[1]


def _config(layers: int) -> dict:
    return {**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], "layers": layers}}


@pytest.fixture(scope="module")
def names(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lazy-cfg")
    return {n: register_config(folder, f"ws-test-lazy-{n}", _config(n)) for n in (2, 4)}


def _blocks(loaded):
    return loaded.model.visual.transformer.resblocks


def _built(loaded) -> list[int]:
    return [i for i, b in enumerate(_blocks(loaded)) if not any(p.is_meta for p in b.parameters())]


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_random_init_is_the_same_in_every_load_and_leaves_the_callers_rng_alone(names):
    state = torch.random.get_rng_state()
    first, second = load_model(names[4]), load_model(names[4])
    assert torch.equal(torch.random.get_rng_state(), state)
    assert _equal(first.model, second.model)
    assert not unbuilt(first)


def test_lazy_blocks_are_built_on_demand_equal_to_the_eager_model(names):
    eager = load_model(names[4])
    lazy = load_model(names[4], lazy=True)
    assert unbuilt(lazy) and _built(lazy) == []
    assert not any(t.is_meta for n, t in lazy.model.named_parameters() if not n.startswith("visual.transformer."))
    ensure_blocks(lazy, [2])
    assert _built(lazy) == [2] and _equal(_blocks(lazy)[2], _blocks(eager)[2])
    release_blocks(lazy, [2])
    assert _built(lazy) == []
    ensure_blocks(lazy, range(4))
    assert not unbuilt(lazy) and _equal(lazy.model, eager.model)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(lazy.model.encode_image(x), eager.model.encode_image(x))


def test_a_block_and_the_text_tower_do_not_depend_on_how_many_blocks_there_are(names):
    short, deep = load_model(names[2]), load_model(names[4])
    assert _equal(_blocks(short)[0], _blocks(deep)[0]) and _equal(_blocks(short)[1], _blocks(deep)[1])
    tokens = short.tokenizer(["a red circle"])
    with torch.no_grad():
        assert torch.equal(short.model.encode_text(tokens), deep.model.encode_text(tokens))


def test_blocks_are_initialised_as_open_clips_constructor_does(names):
    ours = dict(load_model(names[4]).model.named_parameters())
    theirs = dict(make_model(names[4], seed=3).named_parameters())
    assert ours.keys() == theirs.keys()
    for name, t in theirs.items():
        o, t = ours[name].detach(), t.detach()
        if t.unique().numel() == 1:   # constants: LayerNorm gains and shifts, zeroed biases
            assert torch.equal(o, t), name
            continue
        assert o.unique().numel() > 1 and not torch.equal(o, t), name
        if t.numel() >= 256:
            ratio = float(o.std() / t.std())
            assert 0.85 < ratio < 1.15, (name, ratio)


def test_inspect_holds_one_block_at_a_time_and_a_layer_alone_equals_the_whole_run(names, tmp_path, monkeypatch):
    seen: list[list[int]] = []
    real = inspection.describe_model

    def spy(model, layers=None):
        if layers:
            seen.append(_built(model))
        return real(model, layers=layers)

    monkeypatch.setattr(inspection, "describe_model", spy)
    explainer = ConceptExplainer(VOCAB, k=2, cache_dir=tmp_path)
    whole = inspect_model(names[4], explainer, n_directions=2, progress=False, resume=False)
    assert [len(s) for s in seen] == [1, 1, 1, 1], seen
    alone = inspect_model(names[4], explainer, layers=[3], n_directions=2, progress=False, resume=False)
    assert sorted(alone.heads) == [(3, h) for h in range(4)]
    for key, rep in alone.heads.items():
        assert rep == whole.heads[key]


def test_head_count_reads_the_modules_without_building_a_block(names):
    from weightscope.bundled import load_model as load_bundled

    lazy = load_model(names[4], lazy=True)
    assert head_count(lazy, 3) == describe_model(load_model(names[4]), layers=[3]).n_heads == 4
    assert _built(lazy) == []
    bundled = load_bundled()
    assert head_count(bundled, 0) == describe_model(bundled, layers=[0]).n_heads


def test_importing_inspect_does_not_import_numba():
    code = ("import sys, weightscope.analyses.inspection, weightscope.commands.inspect; "
            "assert 'numba' not in sys.modules, 'numba imported'; "
            "from weightscope.concepts.solvers._common import SELECT_TOL; from weightscope.concepts.solvers import "
            "_kernels; assert SELECT_TOL == _kernels.SELECT_TOL and 'numba' in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_method_codes_are_the_kernels():
    from weightscope.concepts.solvers import _fast, _kernels

    assert _fast._METHOD_CODE == {"mp": _kernels.MP, "omp": _kernels.OMP, "nnomp": _kernels.NNOMP,
                                  "comp": _kernels.COMP}


FREED = """
import re, sys, torch
from weightscope.core.compute import return_freed_memory, tune_allocator
def rss(): return int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024
assert tune_allocator()
before = rss()
blocks = [torch.ones(2 << 20) for _ in range(40)]   # 320 MB in 8 MB blocks: from the heap, below 32 MB
small = torch.ones(10)                      # allocated after them: the heap cannot shrink past it by itself
del blocks
kept = rss() - before
if sys.argv[1] == "trim":
    assert return_freed_memory()
print(kept, rss() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_tuned_allocator_keeps_freed_blocks_until_they_are_handed_back():
    def resident(mode):
        out = subprocess.run([sys.executable, "-c", FREED, mode], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        return [int(x) for x in out.stdout.split()[-2:]]

    kept, after = resident("keep")
    assert kept > 64 and after > 64          # MB of the 320 freed: kept in the heap for reuse
    kept, after = resident("trim")
    assert kept > 64 and after < 16          # return_freed_memory hands them back


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_reused_temporaries_hands_the_kept_heap_back_at_the_end():
    code = ("import re, torch\n"
            "from weightscope.core.compute import reused_temporaries\n"
            "def rss(): return int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024\n"
            "before = rss()\n"
            "with reused_temporaries():\n"
            "    blocks = [torch.ones(2 << 20) for _ in range(40)]\n"
            "    small = torch.ones(10)\n"
            "    del blocks\n"
            "    inside = rss() - before\n"
            "print(inside, rss() - before)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    inside, after = (int(x) for x in out.stdout.split()[-2:])
    assert inside > 64 and after < 16   # MB: kept for reuse inside the block, handed back after it


def test_lazy_inspect_of_heads_qk_and_neurons_equals_the_built_models(names, tmp_path):
    explainer = ConceptExplainer(VOCAB, k=2, cache_dir=tmp_path)
    options = dict(n_directions=2, what="vo,qk,mlp", n_neurons=3, progress=False, resume=False)
    lazy = inspect_model(names[2], explainer, **options)
    built = load_model(names[2])
    eager = inspect_model(built, explainer, **options)
    assert lazy.to_dict() == eager.to_dict()
    assert not unbuilt(built) and built.model.token_embedding.weight.numel() > 0   # the caller's model intact
