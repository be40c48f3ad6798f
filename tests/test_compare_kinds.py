"""Comparison of the query-key matrices (kind="qk"): the same matching, verdicts and noise floor as for VO, checked
on constructed truth (a QK singular value rescaled, a key direction turned by a known angle, an fp16 re-save), and
the refusals (unknown kind, layers whose logits are not bilinear) through the API and the CLI's --what."""
import copy
import json
import math

import numpy as np
import pytest
from safetensors.torch import save_file

from weightscope import WeightscopeError, decompose_head, describe_model
from weightscope.adapters import write_attention
from weightscope.compare import compare_models, compare_weights, load_comparisons


def plant_qk(model, layer, head, alphas=None, rotate=None, seed=3):
    """A copy of ``model`` whose head (layer, head) has W_QK = W_Q W_K^T changed only as stated: singular value i
    times alphas[i] (query side), and/or key direction rotate[0] turned by rotate[1] degrees towards a random unit
    vector outside the head's key span. Its value-output factors are untouched. Returns (tuned, expected ||dW||_F^2).
    """
    tuned = copy.deepcopy(model)
    weights = describe_model(model)
    svd = decompose_head(weights, layer, head, kind="qk")
    s, key = svd.s.copy(), svd.write.copy()
    for i, alpha in (alphas or {}).items():
        s[i] *= alpha
    if rotate is not None:
        i, deg = rotate
        w = np.random.default_rng(seed).normal(size=key.shape[1])
        w -= svd.write.T @ (svd.write @ w)
        w /= np.linalg.norm(w)
        key[i] = math.cos(math.radians(deg)) * key[i] + math.sin(math.radians(deg)) * w
    attn = copy.deepcopy(weights.layers[layer].attn)
    attn.read_q[head], attn.read_k[head] = svd.read.T * s, key.T
    write_attention(tuned, layer, attn)
    dense = lambda q, k: q @ k.T                                             # noqa: E731  (independent of SVDs)
    after = describe_model(tuned).layers[layer].attn
    energy = float(np.sum((dense(after.read_q[head], after.read_k[head])
                           - dense(weights.layers[layer].attn.read_q[head], weights.layers[layer].attn.read_k[head])) ** 2))
    return tuned, energy


@pytest.mark.parametrize("alpha", [0.0, 2.0])
def test_rescaled_qk_direction_is_reweighted(tiny_model, alpha):
    tuned, energy = plant_qk(tiny_model, 1, 2, alphas={3: alpha})
    result = compare_models(tiny_model, tuned, progress=False, kind="qk")
    assert result.settings["kind"] == "qk"
    assert [(h.layer, h.head) for h in result.changed_heads()] == [(1, 2)]
    assert [(l, h, d.index) for l, h, d in result.directions("reweighted")] == [(1, 2, 3)]
    assert result.counts()["rotated"] == 0
    assert result[1, 2].directions[3].ratio == pytest.approx(alpha, abs=1e-5)
    assert result.in_basis_share == pytest.approx(1.0, abs=1e-6)
    assert result.energy_total == pytest.approx(energy, rel=1e-4)
    # the value-output matrices were not touched: the VO comparison of the same pair sees nothing
    assert compare_models(tiny_model, tuned, progress=False).changed_heads() == []


def test_rotated_key_direction_is_rotated_by_its_angle(tiny_model):
    deg = 65.0
    tuned, energy = plant_qk(tiny_model, 0, 3, rotate=(5, deg))
    result = compare_models(tiny_model, tuned, progress=False, kind="qk")
    (l, h, d), = result.directions("rotated")
    assert (l, h, d.index) == (0, 3, 5) and d.angle == pytest.approx(deg, abs=1e-3)
    assert result.counts()["reweighted"] == 0
    assert result.energy_total == pytest.approx(energy, rel=1e-4)
    cos = math.cos(math.radians(deg))         # the turned key is an intruder below its cosine, not above
    assert result[0, 3].intruders(cos - 1e-3) == 0 and result[0, 3].intruders(cos + 1e-3) == 1


def test_fp16_resave_is_no_qk_change(tiny_model, tiny_name, tmp_path):
    import torch

    from weightscope.load import load_model

    path = tmp_path / "fp16.safetensors"
    save_file({k: v.to(torch.float16).contiguous() for k, v in tiny_model.state_dict().items()}, str(path))
    resaved = load_model(tiny_name, checkpoint=str(path))
    result = compare_models(tiny_model, resaved, progress=False, kind="qk")
    assert result.settings["precision_tuned"] == "fp16" and result.changed_heads() == []
    raw = compare_models(tiny_model, resaved, progress=False, kind="qk", noise_factor=0.0, change_tol=0.0)
    assert len(raw.changed_heads()) == len(raw.heads)      # the dtype floor is what hides the rounding


def test_unknown_kind_and_non_bilinear_layers_are_refused(tiny_model):
    weights = describe_model(tiny_model)
    with pytest.raises(WeightscopeError, match="unknown matrix kind 'mlp'"):
        compare_weights(weights, weights, progress=False, kind="mlp")
    normed = copy.deepcopy(weights)
    normed.layers[1].attn.logit_scale = np.ones(normed.n_heads)      # scaled cosine attention in layer 1
    with pytest.raises(WeightscopeError, match="layer 1 normalises queries and keys"):
        compare_weights(normed, normed, progress=False, kind="qk")
    assert compare_weights(normed, normed, progress=False, kind="qk", layers=[0]).changed_heads() == []


def test_cli_compare_what_qk(tiny_model, tiny_name, tmp_path, capsys):
    from weightscope.cli import main

    tuned, _ = plant_qk(tiny_model, 1, 2, alphas={0: 2.0})
    paths = []
    for name, m in (("base", tiny_model), ("tuned", tuned)):
        paths.append(str(tmp_path / f"{name}.safetensors"))
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, paths[-1])
    out = tmp_path / "out"
    argv = ["compare", f"{tiny_name}:{paths[0]}", paths[1], "--out", str(out), "--quiet", "--in-process"]
    assert main(argv + ["--what", "qk"]) == 0
    assert "query-key matrices" in capsys.readouterr().out
    (found,) = load_comparisons(out / "compare.json")
    assert found.settings["kind"] == "qk" and [(h.layer, h.head) for h in found.changed_heads()] == [(1, 2)]
    assert json.loads((out / "compare.json").read_text())
    assert main(argv[:3] + ["--quiet", "--in-process"]) == 0            # default vo: the QK edit is invisible
    assert "value-output matrices" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(argv + ["--what", "mlp"])
    assert e.value.code == 2
