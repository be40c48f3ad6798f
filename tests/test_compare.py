"""Checkpoint comparison: constructed ground truth (rescaled and rotated directions), verdicts at every boundary
(any rescaling factor, dtype re-saves, dead and born heads, tie groups, threshold edges through the API and the
CLI), intruder dimensions, exact energy split, architecture mismatch, JSON, labels, the HTML report, specs."""
import copy
import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest
from safetensors.torch import save_file

from weightscope import WeightscopeError, decompose_head, describe_model
from weightscope.models.adapters import write_attention
from weightscope.analyses.compare import (
    Comparison,
    check_same_architecture,
    compare_heads,
    compare_models,
    compare_weights,
    label_comparison,
    load_comparisons,
    parse_checkpoint_spec,
)
from weightscope.decompose import HeadSVD, head_factors
from weightscope.core.linalg import degenerate_groups

from conftest import TINY_CFG, make_model, register_config

RESCALE = {(0, 1): {2: 2.0, 5: 0.4}, (1, 0): {7: -1.0}}   # (layer, head): {direction: alpha}
ROTATE = (1, 2, 0, 60.0)                                   # layer, head, write direction, degrees


def _other_configs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cfg-other")
    deep = copy.deepcopy(TINY_CFG)
    deep["vision_cfg"]["layers"] = 3
    wide = copy.deepcopy(TINY_CFG)
    wide["vision_cfg"]["width"] = 96
    return register_config(d, "ws-test-tiny-deep", deep), register_config(d, "ws-test-tiny-wide", wide)


@pytest.fixture(scope="module")
def other_names(tmp_path_factory):
    return _other_configs(tmp_path_factory)


def construct_tuned(model, rescale=RESCALE, rotate=ROTATE, seed=1):
    """A copy of ``model`` whose heads differ only as stated: listed directions rescaled by alpha (read side),
    one write direction rotated by ``rotate[3]`` degrees towards a random unit vector outside the head's write span.

    Returns (tuned model, analytic change energies per head). rotate=None: no rotation.
    """
    tuned = copy.deepcopy(model)
    weights = describe_model(model)
    rng = np.random.default_rng(seed)
    expected_energy = {}
    layers = {l for l, _ in rescale} | ({rotate[0]} if rotate else set())
    for layer in sorted(layers):
        attn = copy.deepcopy(weights.layers[layer].attn)
        for (l, h), alphas in rescale.items():
            if l != layer:
                continue
            svd = decompose_head(weights, l, h)
            s = svd.s.copy()
            for i, alpha in alphas.items():
                s[i] *= alpha
            attn.read_v[h], attn.write_o[h] = svd.read.T * s, svd.write.copy()
            expected_energy[l, h] = float(np.sum((s - svd.s) ** 2))
        if rotate and rotate[0] == layer:
            l, h, i, deg = rotate
            svd = decompose_head(weights, l, h)
            w = rng.normal(size=svd.write.shape[1])
            w -= svd.write.T @ (svd.write @ w)
            w /= np.linalg.norm(w)
            write = svd.write.copy()
            write[i] = math.cos(math.radians(deg)) * write[i] + math.sin(math.radians(deg)) * w
            attn.read_v[h], attn.write_o[h] = svd.read.T * svd.s, write
            # ||s_i u_i (v_i' - v_i)||^2 = s_i^2 * 2 (1 - cos)
            expected_energy[l, h] = float(svd.s[i] ** 2 * 2 * (1 - math.cos(math.radians(deg))))
        write_attention(tuned, layer, attn)
    return tuned, expected_energy


@pytest.fixture(scope="module")
def constructed(tiny_model):
    tuned, energy = construct_tuned(tiny_model)
    result = compare_models(tiny_model, tuned, progress=False)
    return tuned, energy, result


def test_ground_truth_reports_exactly_the_changed_heads_and_directions(constructed):
    _, energy, result = constructed
    assert len(result.heads) == 2 * 4
    assert {(h.layer, h.head) for h in result.changed_heads()} == set(energy)
    reweighted = {(l, h, d.index): d for l, h, d in result.directions("reweighted")}
    assert set(reweighted) == {(l, h, i) for (l, h), a in RESCALE.items() for i in a}
    for (l, h), alphas in RESCALE.items():
        for i, alpha in alphas.items():
            d = reweighted[l, h, i]
            assert d.ratio == pytest.approx(alpha, rel=1e-5)
            assert abs(d.cos) == pytest.approx(1.0, abs=1e-6)
            assert d.gain == pytest.approx(alpha, rel=1e-5)
    rotated = result.directions("rotated")
    assert [(l, h, d.index) for l, h, d in rotated] == [ROTATE[:3]]
    d = rotated[0][2]
    assert d.cos == pytest.approx(math.cos(math.radians(ROTATE[3])), abs=1e-5)
    assert d.cos_read == pytest.approx(1.0, abs=1e-6)
    # nothing else moved: every other direction is stable with a match cosine of 1
    for l, h, d in result.directions("stable"):
        assert abs(d.cos) > 1 - 1e-5 and d.ratio == pytest.approx(1.0, abs=1e-5)


def test_ground_truth_energy_split_is_exact(constructed, tiny_model):
    tuned, energy, result = constructed
    base_w, tuned_w = describe_model(tiny_model), describe_model(tuned)
    for (l, h), hc in result.heads.items():
        A, B = head_factors(base_w, l, h)
        At, Bt = head_factors(tuned_w, l, h)
        dense = float(np.sum((At @ Bt - A @ B) ** 2))
        assert hc.energy_total == pytest.approx(dense, rel=1e-6, abs=1e-9)
        assert hc.energy_in_basis + hc.energy_off_basis == pytest.approx(hc.energy_total, rel=1e-12)
        if (l, h) in energy:
            assert hc.energy_total == pytest.approx(energy[l, h], rel=1e-5)
    assert result[0, 1].in_basis_share == pytest.approx(1.0, abs=1e-6)
    assert result[1, 0].in_basis_share == pytest.approx(1.0, abs=1e-6)
    # a turn by theta: s^2 (1 - cos)^2 in-basis of s^2 (2 - 2 cos) in total -> (1 - cos) / 2
    cos = math.cos(math.radians(ROTATE[3]))
    assert result[1, 2].in_basis_share == pytest.approx((1 - cos) / 2, abs=1e-6)
    assert result[1, 2].angle_write == pytest.approx(ROTATE[3], abs=1e-3)
    assert result[1, 2].angle_read == pytest.approx(0.0, abs=1e-2)
    total = sum(energy.values())
    inb = energy[0, 1] + energy[1, 0] + energy[1, 2] * (1 - cos) / 2
    assert result.in_basis_share == pytest.approx(inb / total, rel=1e-5)
    layers = {row["layer"]: row for row in result.layer_summary()}
    assert layers[0]["in_basis_share"] == pytest.approx(1.0, abs=1e-6)
    assert layers[1]["energy_off_basis"] == pytest.approx(energy[1, 2] * (1 + cos) / 2, rel=1e-5)
    assert result.counts() == {"stable": 8 * 16 - 4, "reweighted": 3, "rotated": 1}
    assert result.chance_in_basis_share == pytest.approx(1 / (2 * 64 - 16))


def test_identical_checkpoints_report_no_change(tiny_model):
    result = compare_models(tiny_model, copy.deepcopy(tiny_model), progress=False)
    assert result.changed_heads() == [] and result.energy_total == 0.0
    assert result.counts()["stable"] == 8 * 16 and result.in_basis_share == 0.0


def _head(s, seed=0, D=40):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(D, len(s))))
    P, _ = np.linalg.qr(rng.normal(size=(D, len(s))))
    s = np.asarray(s, dtype=float)
    return HeadSVD(0, 0, "vo", Q.T.copy(), s, P.T.copy(), degenerate_groups(s))


def _rotation(r, i, j, angle):
    R = np.eye(r)
    c, s = math.cos(angle), math.sin(angle)
    R[np.ix_([i, j], [i, j])] = [[c, -s], [s, c]]
    return R


def test_degenerate_group_basis_change_is_not_a_change():
    base = _head([5.0, 3.0, 3.0, 2.0, 1.5, 1.0])
    assert base.groups == [[1, 2]]
    R = _rotation(6, 1, 2, 0.5)  # another basis of the same tied pair: the same matrix
    tuned = HeadSVD(0, 0, "vo", R @ base.read, base.s.copy(), R @ base.write, base.groups)
    assert np.allclose(tuned.matrix(), base.matrix())
    # matching vectors one by one would call this a rotation: |cos| of the pair is cos(0.5)^2 = 0.77
    assert (np.abs(base.read @ tuned.read.T) * np.abs(base.write @ tuned.write.T))[1, 1] < 0.8
    hc = compare_heads(base, tuned, change_tol=0.0)
    assert [d.kind for d in hc.directions] == ["stable"] * 6
    assert min(abs(d.cos) for d in hc.directions) > 1 - 1e-9
    assert hc.energy_total < 1e-20


def test_degenerate_group_split_along_new_axes_is_reweighting():
    base = _head([5.0, 3.0, 3.0, 2.0, 1.5, 1.0], seed=2)
    R = _rotation(6, 1, 2, 0.7)
    # tuned: the tie broken along axes the base never singled out (a rotated basis of the pair)
    gains = np.array([1.0, 1.6, 1.0, 1.0, 1.0, 1.0])
    M = R.T @ np.diag(gains) @ R                    # symmetric reweighting inside the group
    W_t = base.read.T @ (M * base.s[:, None]) @ base.write
    U, s, Vh = np.linalg.svd(W_t)
    tuned = HeadSVD(0, 0, "vo", U[:, :6].T.copy(), s[:6], Vh[:6].copy(), degenerate_groups(s[:6]))
    hc = compare_heads(base, tuned)
    kinds = [d.kind for d in hc.directions]
    assert kinds.count("reweighted") == 1 and kinds.count("rotated") == 0
    d = next(d for d in hc.directions if d.kind == "reweighted")
    assert d.index in (1, 2) and d.group == [1, 2]
    assert d.ratio == pytest.approx(1.6, rel=1e-9)
    assert hc.in_basis_share == pytest.approx(1.0, abs=1e-9)


def test_tie_created_by_tuning_is_matched_as_a_subspace():
    base = _head([5.0, 3.0, 2.5, 1.0], seed=5)
    assert base.groups == []
    s = base.s.copy()
    s[2] = 3.0                                      # tuning ties direction 2 with direction 1 ...
    R = _rotation(4, 1, 2, 0.6)                     # ... so the tuned SVD may return any basis of the pair
    tuned = HeadSVD(0, 0, "vo", R @ base.read, s, R @ base.write, degenerate_groups(s))
    assert tuned.groups == [[1, 2]]
    hc = compare_heads(base, tuned)
    assert [d.kind for d in hc.directions] == ["stable", "stable", "reweighted", "stable"]
    assert hc.directions[2].ratio == pytest.approx(1.2, rel=1e-9)
    assert hc.in_basis_share == pytest.approx(1.0, abs=1e-9)


def _mixed(base, s_new, i, j, angle):
    """base with singular values s_new and directions i, j mixed coherently (reads and writes) by ``angle``."""
    R = _rotation(base.s.size, i, j, angle)
    s_new = np.asarray(s_new, dtype=float)
    return HeadSVD(0, 0, "vo", R @ base.read, s_new, R @ base.write, degenerate_groups(s_new))


def test_near_tie_mixed_by_a_larger_change_is_not_a_rotation():
    # gap 0.01 (above the decomposition's 1e-3 * s0 ties) but far below the change elsewhere (||dW||_2 = 0.4)
    base = _head([5.0, 3.01, 3.0, 1.0], seed=6)
    assert base.groups == []
    tuned = _mixed(base, [5.0, 3.01, 3.0, 1.4], 1, 2, math.radians(40))
    plain = compare_heads(base, tuned, tie_factor=0.0)
    assert [d.kind for d in plain.directions] == ["stable", "rotated", "rotated", "reweighted"]
    hc = compare_heads(base, tuned)
    assert [d.kind for d in hc.directions] == ["stable", "stable", "stable", "reweighted"]
    assert hc.directions[1].group == [1, 2] and hc.directions[3].ratio == pytest.approx(1.4)
    # the mixing itself changes W by (gap * sin 80deg)^2 / 2 per pair side: tiny next to the reweighting
    assert hc.in_basis_share > 0.999 and hc.energy_total == pytest.approx(plain.energy_total)


def test_well_separated_mixing_stays_a_rotation():
    base = _head([5.0, 3.0, 2.0, 1.0], seed=7)
    tuned = _mixed(base, base.s, 1, 2, math.radians(40))
    hc = compare_heads(base, tuned)
    assert [d.kind for d in hc.directions] == ["stable", "rotated", "rotated", "stable"]
    assert hc.off_basis_share > 0.5
    assert hc.intruders(0.76) == 0 and hc.intruders(0.77) == 2   # each mixed write vector: best |cos| cos 40 deg


def test_tiny_change_energy_is_exact():
    # a 1e-7 relative change: expanding ||W_t||^2 + ||W_b||^2 - 2<W_t, W_b> would lose it to rounding
    base = _head([4.0, 2.0, 1.0, 0.5], seed=4)
    s = base.s.copy()
    s[0] *= 1 + 1e-7
    tuned = HeadSVD(0, 0, "vo", base.read.copy(), s, base.write.copy(), [])
    hc = compare_heads(base, tuned, change_tol=0.0)
    assert hc.energy_total == pytest.approx((4e-7) ** 2, rel=1e-6)
    assert hc.in_basis_share == pytest.approx(1.0, rel=1e-6)


def test_sign_flip_is_reweighting_by_minus_one():
    base = _head([4.0, 2.0, 1.0], seed=3)
    tuned = HeadSVD(0, 0, "vo", base.read.copy(), base.s.copy(), base.write * np.array([[1.0], [-1.0], [1.0]]), [])
    hc = compare_heads(base, tuned)
    assert [d.kind for d in hc.directions] == ["stable", "reweighted", "stable"]
    assert hc.directions[1].ratio == pytest.approx(-1.0) and hc.energy_total == pytest.approx(16.0)


def test_mismatched_architectures_are_named(tiny_model, other_names):
    deep, wide = other_names
    base = describe_model(tiny_model)
    with pytest.raises(WeightscopeError, match="layer count 2 vs 3"):
        compare_weights(base, describe_model(make_model(deep)), progress=False)
    with pytest.raises(WeightscopeError, match="width 64 vs 96"):
        check_same_architecture(base, describe_model(make_model(wide)))


def test_json_round_trip(constructed, tmp_path):
    _, _, result = constructed
    back = Comparison.from_json(result.to_json())
    assert back.summary() == result.summary()
    assert back[1, 2].directions[0] == result[1, 2].directions[0]
    path = tmp_path / "c.json"
    result.to_json(path)
    assert load_comparisons(path)[0].in_basis_share == result.in_basis_share
    with pytest.raises(WeightscopeError, match="not a weightscope comparison"):
        Comparison.from_json('{"format": "something-else"}')


def test_labels_rank_amplified_and_suppressed_concepts(constructed):
    from weightscope.analyses.inspection import Direction, HeadReport, Inspection

    _, _, result = constructed
    result = Comparison.from_json(result.to_json())  # leave the shared fixture unlabelled

    def inspection(tag):
        heads = {}
        for (l, h), hc in result.heads.items():
            dirs = [Direction(i, "write", 1, [f"{tag}-L{l}H{h}d{i}", "shared"], [0.7, 0.3], 0.9) for i in range(16)]
            heads[l, h] = HeadReport(l, h, [1.0] * 16, [], dirs)
        return Inspection(tag, "test", 1, {}, heads)

    label_comparison(result, inspection("base"), inspection("tuned"))
    d = result[0, 1].directions[2]
    assert d.base_concepts == [["base-L0H1d2", 0.7], ["shared", 0.3]]
    assert d.tuned_concepts[0][0] == f"tuned-L0H1d{d.tuned_index}"
    amplified = [c for c, _ in result.amplified_concepts()]
    suppressed = [c for c, _ in result.suppressed_concepts()]
    assert amplified[0] == "base-L0H1d2"                      # x2
    assert suppressed[0] == "base-L0H1d5"                      # x0.4
    # only reweighted directions score: stable ones and the sign flip (|ratio| = 1) add nothing
    assert set(amplified + suppressed) <= {"base-L0H1d2", "base-L0H1d5", "shared"}
    lost, gained = result.rotated_concepts()
    assert lost[0][0] == "base-L1H2d0" and gained[0][0].startswith("tuned-L1H2d")
    assert "amplified concepts:  base-L0H1d2" in result.summary()


@pytest.mark.parametrize("spec, model, expected", [
    ("bundled", None, {"model": "bundled", "pretrained": "base", "checkpoint": None}),
    ("bundled:tuned", None, {"model": "bundled", "pretrained": "tuned", "checkpoint": None}),
    ("ViT-B-32:openai", None, {"model": "ViT-B-32", "pretrained": "openai", "checkpoint": None}),
    ("ft.safetensors", "ViT-B-16", {"model": "ViT-B-16", "pretrained": None, "checkpoint": "ft.safetensors"}),
    ("hf-hub:org/repo", None, {"model": "hf-hub:org/repo", "pretrained": None, "checkpoint": None}),
    ("ViT-B-32", None, {"model": "ViT-B-32", "pretrained": None, "checkpoint": None}),
])
def test_parse_checkpoint_spec(spec, model, expected):
    assert parse_checkpoint_spec(spec, model) == expected


def test_parse_checkpoint_spec_errors():
    # a bare path needs its architecture, named in the spec itself (the CLI has no --model option)
    with pytest.raises(WeightscopeError, match="write NAME:ft.pt"):
        parse_checkpoint_spec("ft.pt")
    assert parse_checkpoint_spec("ViT-B-16:ft.pt") == {"model": "ViT-B-16", "pretrained": None, "checkpoint": "ft.pt"}
    with pytest.raises(WeightscopeError, match="NAME:TAG"):
        parse_checkpoint_spec("ViT-B-32:")


def _save(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def test_cli_compare_writes_report_and_json(constructed, tiny_model, tiny_name, tmp_path, capsys):
    from weightscope.cli import main

    tuned, energy, _ = constructed
    base_path, tuned_path = _save(tiny_model, tmp_path / "base.safetensors"), _save(tuned, tmp_path / "tuned.safetensors")
    out = tmp_path / "out"
    assert main(["compare", f"{tiny_name}:{base_path}", tuned_path, base_path, "--out", str(out), "--quiet", "--in-process"]) == 0
    text = capsys.readouterr().out
    assert "reweighted" in text and "L1 H2" in text
    found = load_comparisons(out / "compare.json")
    assert [len(c.changed_heads()) for c in found] == [3, 0]
    assert {(h.layer, h.head) for h in found[0].changed_heads()} == set(energy)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 + 2 * 2 and "L1 H2" in html
    data = json.loads((out / "compare.json").read_text())
    assert data["comparisons"][0]["totals"]["rotated"] == 1


def test_cli_compare_label_with_inspections(constructed, tiny_model, tiny_name, tmp_path, capsys):
    from weightscope.cli import main

    tuned, _, _ = constructed
    base_path, tuned_path = _save(tiny_model, tmp_path / "b.safetensors"), _save(tuned, tmp_path / "t.safetensors")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["red", "blue", "green", "circle", "square", "dog", "cat", "tree", "car", "sky"]))
    out = tmp_path / "out"
    argv = ["compare", f"{tiny_name}:{base_path}", tuned_path, "--label", "--vocab", str(vocab),
            "--quiet", "--out", str(out), "--in-process"]
    assert main(argv) == 0
    assert "amplified concepts:" in capsys.readouterr().out
    (c,) = load_comparisons(out / "compare.json")
    assert c.labelled
    rotated = c[ROTATE[0], ROTATE[1]].directions[ROTATE[2]]
    words = set(vocab.read_text().split("\n"))
    assert rotated.kind == "rotated" and rotated.base_concepts and rotated.tuned_concepts
    assert {w for w, _ in rotated.base_concepts + rotated.tuned_concepts} <= words
    assert c.amplified_concepts() and c.suppressed_concepts()


def test_cli_compare_architecture_mismatch(tiny_model, tiny_name, other_names, tmp_path, capsys):
    from weightscope.cli import main

    base_path = _save(tiny_model, tmp_path / "base.safetensors")
    assert main(["compare", f"{tiny_name}:{base_path}", other_names[0], "--quiet", "--in-process"]) == 2
    assert "layer count 2 vs 3" in capsys.readouterr().err


@pytest.mark.slow
def test_ground_truth_vit_b32():
    base = make_model("ViT-B-32")
    rescale, rotate = {(3, 5): {0: 1.5, 10: 0.5}, (9, 1): {4: 3.0}}, (7, 11, 2, 45.0)
    tuned, energy = construct_tuned(base, rescale, rotate)
    result = compare_models(base, tuned, progress=False)
    assert {(h.layer, h.head) for h in result.changed_heads()} == set(energy)
    assert {(l, h, d.index) for l, h, d in result.directions("reweighted")} == {(3, 5, 0), (3, 5, 10), (9, 1, 4)}
    assert [(l, h, d.index) for l, h, d in result.directions("rotated")] == [rotate[:3]]
    cos = math.cos(math.radians(rotate[3]))
    assert result[7, 11].in_basis_share == pytest.approx((1 - cos) / 2, abs=1e-6)
    assert result[7, 11].directions[2].angle == pytest.approx(rotate[3], abs=1e-3)


# ------------------------------------------------------------------------------- verdicts at the boundaries


@pytest.mark.parametrize("alpha", [0.0, -1.0, 0.5, 2.0])
def test_rescaling_by_any_factor_is_reweighting(tiny_model, alpha):
    # alpha 0 used to read "rotation 100 %": the dead direction's tuned partner has arbitrary vectors
    tuned, energy = construct_tuned(tiny_model, rescale={(1, 3): {4: alpha}}, rotate=None)
    result = compare_models(tiny_model, tuned, progress=False)
    assert [(h.layer, h.head) for h in result.changed_heads()] == [(1, 3)]
    assert [(l, h, d.index) for l, h, d in result.directions("reweighted")] == [(1, 3, 4)]
    assert result.counts()["rotated"] == 0
    d = result[1, 3].directions[4]
    assert d.ratio == pytest.approx(alpha, abs=1e-6) and d.gain == pytest.approx(alpha, abs=1e-6)
    assert result.in_basis_share == pytest.approx(1.0, abs=1e-9)
    assert result.energy_total == pytest.approx(energy[1, 3], rel=1e-6)
    assert sum(result.intruder_counts().values()) == 0     # a pure rescaling has no intruder at any epsilon


def test_several_directions_rescaled_to_zero_and_a_dying_head(tiny_model):
    tuned, _ = construct_tuned(tiny_model, rescale={(0, 0): {1: 0.0, 6: 0.0, 9: 0.0}, (1, 1): dict.fromkeys(range(16), 0.0)},
                               rotate=None)
    result = compare_models(tiny_model, tuned, progress=False)
    assert {(l, h, d.index) for l, h, d in result.directions("reweighted")} == \
        {(0, 0, 1), (0, 0, 6), (0, 0, 9)} | {(1, 1, i) for i in range(16)}
    assert all(d.ratio == pytest.approx(0.0, abs=1e-9) for d in result[1, 1].directions)
    assert result[1, 1].in_basis_share == pytest.approx(1.0) and result.counts()["rotated"] == 0


def test_head_coming_alive_is_new_directions(tiny_model):
    # base head (0, 2) writes nothing; the tuned one is the random-init head: all of it is new
    base = copy.deepcopy(tiny_model)
    attn = copy.deepcopy(describe_model(tiny_model).layers[0].attn)
    attn.write_o[2] = 0.0
    write_attention(base, 0, attn)
    result = compare_models(base, tiny_model, progress=False)
    hc = result[0, 2]
    assert [(h.layer, h.head) for h in result.changed_heads()] == [(0, 2)]
    assert hc.rel_change == math.inf and hc.off_basis_share == pytest.approx(1.0)
    assert [d.kind for d in hc.directions] == ["rotated"] * 16
    assert len(hc.intruder_cos) == 16                                   # every live tuned direction is scored
    back = compare_models(tiny_model, base, progress=False)[0, 2]       # and the other way: the head dies
    assert [d.kind for d in back.directions] == ["reweighted"] * 16 and back.in_basis_share == pytest.approx(1.0)


@pytest.mark.parametrize("dtype, name", [("float16", "fp16"), ("bfloat16", "bf16")])
def test_resave_in_half_precision_is_no_change(tiny_model, tiny_name, tmp_path, dtype, name):
    import torch

    from weightscope.bundled import load_model

    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.to(getattr(torch, dtype)).contiguous() for k, v in tiny_model.state_dict().items()}, str(path))
    resaved = load_model(tiny_name, checkpoint=str(path))
    result = compare_models(tiny_model, resaved, progress=False)
    assert result.settings["precision_base"] == "fp32" and result.settings["precision_tuned"] == name
    assert result.changed_heads() == [] and result.counts()["stable"] == 8 * 16
    # the floor is what hides it: without it every head changes, by less than the expected rounding change
    raw = compare_models(tiny_model, resaved, progress=False, noise_factor=0.0, change_tol=0.0)
    assert len(raw.changed_heads()) == 8
    measured = [math.sqrt(h.energy_total) / h.noise for h in raw.heads.values()]
    assert 0.2 < min(measured) and max(measured) < 1.0


def test_change_above_the_half_precision_floor_is_seen(tiny_model):
    # a 1 % rescaling stored in bf16 (unit roundoff 2^-8 = 0.4 %) is still a change
    import torch

    tuned, _ = construct_tuned(tiny_model, rescale={(0, 3): {0: 1.1}}, rotate=None)
    tuned = tuned.to(torch.bfloat16).float()
    result = compare_models(tiny_model, tuned, progress=False)
    assert result.settings["precision_tuned"] == "bf16"
    assert [(h.layer, h.head) for h in result.changed_heads()] == [(0, 3)]
    assert [(l, h, d.index) for l, h, d in result.directions("reweighted")] == [(0, 3, 0)]


def test_planted_rotation_is_rotated_by_its_angle_and_is_an_intruder_at_the_right_epsilon(tiny_model):
    deg = 70.0                                # write direction turned to cos 0.342 with every base direction
    tuned, _ = construct_tuned(tiny_model, rescale={}, rotate=(0, 1, 3, deg))
    result = compare_models(tiny_model, tuned, progress=False)
    (l, h, d), = result.directions("rotated")
    assert (l, h, d.index) == (0, 1, 3) and d.angle == pytest.approx(deg, abs=1e-4)
    cos = math.cos(math.radians(deg))
    assert result[0, 1].intruders(cos - 1e-3) == 0 and result[0, 1].intruders(cos + 1e-3) == 1
    assert result.intruder_counts([0.3, 0.4]) == {0.3: 0, 0.4: 1}
    assert max(result[0, 1].top_angles_write) == pytest.approx(deg, abs=1e-3)   # direction 3 is in the top 8


def test_sign_flip_inside_a_tie_group():
    base = _head([5.0, 3.0, 3.0, 2.0], seed=8)
    assert base.groups == [[1, 2]]
    flip = np.array([[1.0], [1.0], [-1.0], [1.0]])
    R = _rotation(4, 1, 2, 0.4)               # the tuned SVD returns another basis of the tied pair
    tuned = HeadSVD(0, 0, "vo", R @ base.read, base.s.copy(), R @ (base.write * flip), [[1, 2]])
    hc = compare_heads(base, tuned)
    kinds = [d.kind for d in hc.directions]
    assert kinds.count("reweighted") == 1 and kinds.count("rotated") == 0
    (d,) = hc.of_kind("reweighted")
    assert d.ratio == pytest.approx(-1.0, abs=1e-9) and hc.in_basis_share == pytest.approx(1.0)


def test_tied_values_rescaled_together_are_reweighted():
    base = _head([4.0, 2.0, 2.0, 2.0, 1.0], seed=9)
    s = base.s * np.array([1, 0.5, 0.5, 0.5, 1])
    R = np.eye(5)
    R[1:4, 1:4] = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    tuned = HeadSVD(0, 0, "vo", R @ base.read, s, R @ base.write, degenerate_groups(s))
    hc = compare_heads(base, tuned)
    assert [d.kind for d in hc.directions] == ["stable", "reweighted", "reweighted", "reweighted", "stable"]
    assert [d.ratio for d in hc.directions[1:4]] == pytest.approx([0.5] * 3)


# ------------------------------------------------------------------------------- threshold edges (API and CLI)


def _edge_model(tiny_model):
    """Head (0, 0): direction 2 rescaled by 1.06; head (1, 1): write direction 5 turned by 40 deg."""
    return construct_tuned(tiny_model, rescale={(0, 0): {2: 1.06}}, rotate=(1, 1, 5, 40.0))


@pytest.fixture(scope="module")
def edge(tiny_model):
    tuned, energy = _edge_model(tiny_model)
    base_w = describe_model(tiny_model)
    rel = {k: math.sqrt(e) / float(np.linalg.norm(decompose_head(base_w, *k).s)) for k, e in energy.items()}
    return tuned, rel


@pytest.mark.parametrize("tol, reweighted", [(0.0599, True), (0.0601, False)])
def test_ratio_tol_edge(tiny_model, edge, tol, reweighted):
    result = compare_models(tiny_model, edge[0], progress=False, ratio_tol=tol)
    assert result[0, 0].directions[2].kind == ("reweighted" if reweighted else "stable")


@pytest.mark.parametrize("threshold, rotated", [(0.767, True), (0.765, False)])   # cos 40 deg = 0.7660
def test_cos_threshold_edge(tiny_model, edge, threshold, rotated):
    result = compare_models(tiny_model, edge[0], progress=False, cos_threshold=threshold)
    assert result[1, 1].directions[5].kind == ("rotated" if rotated else "stable")


@pytest.mark.parametrize("factor, changed", [(1.01, False), (0.99, True)])
def test_change_tol_edge(tiny_model, edge, factor, changed):
    rel = edge[1][0, 0]                                    # relative change ||dW|| / ||W|| of head (0, 0)
    result = compare_models(tiny_model, edge[0], progress=False, change_tol=rel * factor)
    assert result[0, 0].changed is changed and result[1, 1].changed      # head (1, 1) changed far more


def test_threshold_edges_through_the_cli(tiny_model, tiny_name, edge, tmp_path, capsys):
    from weightscope.cli import main

    base_path, tuned_path = _save(tiny_model, tmp_path / "b.safetensors"), _save(edge[0], tmp_path / "t.safetensors")
    rel = edge[1][0, 0]

    def run(*flags):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        assert main(["compare", f"{tiny_name}:{base_path}", tuned_path, "--quiet", "--in-process",
                     "--out", str(out), *flags]) == 0
        (c,) = load_comparisons(out / "compare.json")
        return c

    # just inside each edge (three runs: each flag moves a verdict away from its default's)
    below = run("--ratio-tol", "0.0599", "--cos-threshold", "0.767", "--change-tol", f"{rel * 0.99!r}",
                "--epsilon", "0.3")
    assert below[0, 0].changed and below[0, 0].directions[2].kind == "reweighted"
    assert below[1, 1].directions[5].kind == "rotated" and below.settings["epsilon"] == 0.3
    above = run("--ratio-tol", "0.0601", "--cos-threshold", "0.765")
    assert above[0, 0].changed and above[0, 0].directions[2].kind == "stable"
    assert above[1, 1].directions[5].kind == "stable"
    assert run("--change-tol", f"{rel * 1.01!r}")[0, 0].changed is False
    capsys.readouterr()
    assert main(["compare", f"{tiny_name}:{base_path}", tuned_path, "--cos-threshold", "1.5"]) == 2
    assert "cos_threshold must be in (0, 1]" in capsys.readouterr().err


# ------------------------------------------------------------------------------- the HTML report


class _Tables(HTMLParser):
    """Every <table> of a page as a list of rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.tables, self._row, self._cell = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_report_numbers_and_labels_match_the_result(constructed, tmp_path):
    from weightscope.reports.compare import write_report

    _, _, result = constructed
    write_report([result], tmp_path)
    parser = _Tables()
    parser.feed((tmp_path / "report.html").read_text())
    summary = parser.tables[0]
    head = summary[0]
    row = dict(zip(head, summary[1]))
    c = result.counts()
    assert row["tuned checkpoint"] == result.tuned
    assert (int(row["reweighted"]), int(row["rotated"]), int(row["stable"])) == (c["reweighted"], c["rotated"], c["stable"])
    assert float(row["in-basis %"]) == pytest.approx(100 * result.in_basis_share, abs=0.05)
    assert float(row["off-basis %"]) == pytest.approx(100 * result.off_basis_share, abs=0.05)
    assert int(row["intruders"]) == result.intruder_counts([0.5])[0.5]
    layers = next(t for t in parser.tables if t[0][0] == "layer")
    for cells, expect in zip(layers[1:], result.layer_summary()):
        got = dict(zip(layers[0], cells))
        assert int(got["layer"]) == expect["layer"]
        assert (int(got["reweighted dirs"]), int(got["rotated dirs"])) == (expect["reweighted"], expect["rotated"])
    heads = next(t for t in parser.tables if t[0][0] == "head")
    by_head = {r[0]: dict(zip(heads[0], r)) for r in heads[1:]}
    for hc in result.changed_heads():
        got = by_head[f"L{hc.layer} H{hc.head}"]
        assert (int(got["# reweighted"]), int(got["# rotated"])) == (len(hc.of_kind("reweighted")), len(hc.of_kind("rotated")))
    text = (tmp_path / "report.html").read_text()
    assert "in-basis" in text and "matched angle" in text and "36.9" in text    # the definitions are on the page


def test_report_concept_labels_match_the_result(constructed, tmp_path):
    from weightscope.analyses.inspection import Direction, HeadReport, Inspection
    from weightscope.reports.compare import write_report

    _, _, result = constructed
    result = Comparison.from_json(result.to_json())
    heads = {(l, h): HeadReport(l, h, [1.0] * 16, [], [Direction(i, "write", 1, [f"c{l}{h}{i}"], [1.0], 0.9)
                                                        for i in range(16)]) for l, h in result.heads}
    label_comparison(result, Inspection("b", "test", 1, {}, heads), None)
    write_report([result], tmp_path)
    parser = _Tables()
    parser.feed((tmp_path / "report.html").read_text())
    concepts = next(t for t in parser.tables if t[0] == ["", "concepts"])
    rows = {r[0]: r[1] for r in concepts[1:]}
    expect = ", ".join(f"{x} ({v:+.3f})" for x, v in result.amplified_concepts(8))
    assert rows["amplified"] == expect and "c012" in expect        # L0 H1 direction 2, x2
    assert rows["suppressed"].startswith("c015")                  # L0 H1 direction 5, x0.4
    assert rows["rotated away"].startswith("c120")                 # L1 H2 direction 0, turned 60 deg
