"""Comparison of the query-key matrices (kind="qk") and of the MLP write matrices (kind="mlp"): the same matching,
verdicts and noise floor as for VO, checked on constructed truth (a singular value rescaled by 0 or 2, a key or
write direction turned by a known angle, an fp16 re-save) and the refusals (unknown kind, layers whose logits are
not bilinear, heads for the MLP) through the API and the CLI's --what."""
import copy
import json
import math

import numpy as np
import pytest
from safetensors.torch import save_file

from weightscope import WeightscopeError, decompose_head, describe_model
from weightscope.models.adapters import write_attention
from weightscope.analyses.compare import compare_models, compare_weights, load_comparisons


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


def fp16_resave_compared(model, name, tmp_path, kind):
    """``model`` re-saved in fp16 and loaded back, compared with itself for ``kind``: (with the dtype noise floor,
    without it). Asserts the floor hides the rounding: no change with it, every unit changed without it."""
    import torch

    from weightscope.bundled import load_model

    path = tmp_path / "fp16.safetensors"
    save_file({k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}, str(path))
    resaved = load_model(name, checkpoint=str(path))
    result = compare_models(model, resaved, progress=False, kind=kind)
    assert result.settings["precision_tuned"] == "fp16" and result.changed_heads() == []
    raw = compare_models(model, resaved, progress=False, kind=kind, noise_factor=0.0, change_tol=0.0)
    assert len(raw.changed_heads()) == len(raw.heads)      # the dtype floor is what hides the rounding
    return result, raw


def test_fp16_resave_is_no_qk_change(tiny_model, tiny_name, tmp_path):
    fp16_resave_compared(tiny_model, tiny_name, tmp_path, "qk")


def test_unknown_kind_and_non_bilinear_layers_are_refused(tiny_model):
    weights = describe_model(tiny_model)
    with pytest.raises(WeightscopeError, match="unknown matrix kind 'ffn'"):
        compare_weights(weights, weights, progress=False, kind="ffn")
    with pytest.raises(WeightscopeError, match="heads do not apply to the MLP"):
        compare_weights(weights, weights, progress=False, kind="mlp", heads=[0])
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
        main(argv + ["--what", "ffn"])
    assert e.value.code == 2


# ------------------------------------------------------------------------------------------------------ MLP


def plant_mlp(model, layer, alphas=None, rotate=None, seed=4):
    """(base, tuned, expected ||dW||_F^2): block ``layer``'s MLP write matrix W (F, D) differs only as stated:
    singular value i times alphas[i], and/or residual direction rotate[0] turned by rotate[1] degrees towards a
    unit vector outside W's row space. The tiny model's W has full row rank D, so for a rotation the base's weakest
    direction is first set to 0 (base then differs from ``model`` there) and the turn goes towards it."""
    from weightscope.models.adapters import write_mlp

    base, tuned = copy.deepcopy(model), copy.deepcopy(model)
    weights = describe_model(model)
    lw = copy.deepcopy(weights.layers[layer])
    assert lw.layer_scale_mlp is None          # the planted W is mlp_out itself
    U, s, Vh = np.linalg.svd(lw.mlp_out, full_matrices=False)   # test-side reference, not the package's SVD
    if rotate is not None:                      # make room outside the row space: drop the weakest direction
        s = s.copy()
        s[-1] = 0.0
        lw.mlp_out = (U * s) @ Vh
        write_mlp(base, layer, lw)
    s_new, Vh_new = s.copy(), Vh.copy()
    for i, alpha in (alphas or {}).items():
        s_new[i] *= alpha
    if rotate is not None:
        i, deg = rotate
        w = Vh[-1]                              # orthogonal to every live direction
        Vh_new[i] = math.cos(math.radians(deg)) * Vh[i] + math.sin(math.radians(deg)) * w
    tuned_lw = copy.deepcopy(lw)
    tuned_lw.mlp_out = (U * s_new) @ Vh_new
    write_mlp(tuned, layer, tuned_lw)
    before = describe_model(base).layers[layer].mlp_out
    after = describe_model(tuned).layers[layer].mlp_out
    return base, tuned, float(np.sum((after - before) ** 2))


@pytest.mark.parametrize("alpha", [0.0, 2.0])
def test_rescaled_mlp_write_direction_is_reweighted(tiny_model, alpha):
    base, tuned, energy = plant_mlp(tiny_model, 1, alphas={2: alpha})
    result = compare_models(base, tuned, progress=False, kind="mlp")
    assert result.settings["kind"] == "mlp" and sorted(result.heads) == [(l, 0) for l in range(2)]
    assert [(h.layer, h.head) for h in result.changed_heads()] == [(1, 0)]
    assert [(l, h, d.index) for l, h, d in result.directions("reweighted")] == [(1, 0, 2)]
    assert result.counts()["rotated"] == 0
    assert result[1, 0].directions[2].ratio == pytest.approx(alpha, abs=1e-5)
    assert result.in_basis_share == pytest.approx(1.0, abs=1e-6)
    assert result.energy_total == pytest.approx(energy, rel=1e-4)
    assert compare_models(base, tuned, progress=False).changed_heads() == []     # attention untouched


def test_rotated_mlp_write_direction_is_rotated_by_its_angle(tiny_model):
    deg = 55.0
    base, tuned, energy = plant_mlp(tiny_model, 0, rotate=(4, deg))
    result = compare_models(base, tuned, progress=False, kind="mlp")
    (l, h, d), = result.directions("rotated")
    assert (l, h, d.index) == (0, 0, 4) and d.angle == pytest.approx(deg, abs=1e-3)
    assert result.counts()["reweighted"] == 0
    assert result.energy_total == pytest.approx(energy, rel=1e-4)


def test_fp16_resave_is_no_mlp_change(tiny_model, tiny_name, tmp_path):
    _, raw = fp16_resave_compared(tiny_model, tiny_name, tmp_path, "mlp")
    measured = [math.sqrt(h.energy_total) / h.noise for h in raw.heads.values()]
    assert 0.2 < min(measured) and max(measured) < 1.0         # the one-factor noise model fits the rounding


def test_cli_compare_what_mlp(tiny_model, tiny_name, tmp_path, capsys):
    from weightscope.cli import main

    base, tuned, _ = plant_mlp(tiny_model, 1, alphas={0: 0.5})
    paths = []
    for name, m in (("base", base), ("tuned", tuned)):
        paths.append(str(tmp_path / f"{name}.safetensors"))
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, paths[-1])
    argv = ["compare", f"{tiny_name}:{paths[0]}", paths[1], "--quiet", "--in-process", "--what", "mlp"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "MLP write" in text and "L1 H0" in text
    assert main(argv + ["--heads", "1"]) == 2
    assert "heads do not apply to the MLP" in capsys.readouterr().err
    assert main(argv + ["--label"]) == 2                 # labels explain VO directions only: refused, not wrong
    assert "--label explains value-output directions" in capsys.readouterr().err


def test_labels_refused_for_other_kinds(tiny_model):
    from weightscope.analyses.compare import label_comparison

    result = compare_models(tiny_model, tiny_model, progress=False, kind="qk")
    with pytest.raises(WeightscopeError, match="concept labels explain value-output directions"):
        label_comparison(result, base_inspection=object())
