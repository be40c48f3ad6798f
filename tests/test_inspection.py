"""Head inspection: planted concepts are recovered, JSON round-trips, CLI errors are one line with exit 2."""
import copy
import json

import numpy as np
import pytest

from weightscope import Inspection, WeightscopeError, decompose_head, describe_model, inspect_model, load_model
from weightscope.models.adapters import write_attention
from weightscope.cli import main
from weightscope.concepts.embed import embed_concepts
from weightscope.concepts.explainer import ConceptExplainer

VOCAB = ["red", "blue", "green", "circle", "square", "triangle", "top left", "bottom right", "large", "small",
         "dog", "car", "tree", "house", "ocean", "mountain", "violin", "pizza", "bicycle", "chair"]


def _plant(model, concepts, plants, cache_dir):
    """Give head (layer, head) a write direction whose joint-space image is exactly concept j's embedding.

    plants: {(layer, head): j}. The planted direction gets the largest singular value, so it is direction 0.
    Returns the edited model and {(layer, head): planted residual direction}.
    """
    model = copy.deepcopy(model)
    weights = describe_model(model)
    D = embed_concepts(model, load_model(model).tokenizer, concepts, cache_dir=cache_dir, progress=False)
    ln = weights.ln_post
    M = ln.scale[:, None] * weights.proj  # (Dres, E): centred direction -> joint space
    Mc = M - M.mean(axis=0)  # v @ Mc == (v - mean(v)) @ M: the centring ln_post applies
    planted = {}
    for (layer, head), j in plants.items():
        v = np.linalg.lstsq(Mc.T, D[j].astype(np.float64), rcond=None)[0]
        attn = weights.layers[layer].attn
        dh = attn.head_width
        rng = np.random.default_rng(layer * 10 + head)
        Qr = np.linalg.qr(rng.normal(size=(weights.width, dh)))[0]
        Qw = np.linalg.qr(np.column_stack([v, rng.normal(size=(weights.width, dh - 1))]))[0]
        Qw[:, 0] = v / np.linalg.norm(v)  # QR may flip the sign; keep +v as direction 0
        s = np.linspace(1.0, 0.2, dh)
        s[0] = 5.0
        attn.read_v[head] = Qr * s
        attn.write_o[head] = Qw.T
        write_attention(model, layer, attn)
        planted[layer, head] = v
    return model, planted


def test_planted_concepts_are_recovered(tiny_model, tmp_path):
    plants = {(0, 1): VOCAB.index("circle"), (1, 3): VOCAB.index("violin")}
    model, planted = _plant(tiny_model, VOCAB, plants, tmp_path)
    result = inspect_model(load_model(model), ConceptExplainer(VOCAB, k=3, cache_dir=tmp_path), progress=False)
    weights = describe_model(model)
    for (layer, head), j in plants.items():
        # the sign convention may have flipped the planted vector: its concept is explained under that sign
        sign = int(np.sign(decompose_head(weights, layer, head).write[0] @ planted[layer, head]))
        top = result[layer, head].direction(0, "write", sign)
        assert top.concepts[0] == VOCAB[j]
        assert top.fidelity > 0.99
        assert result[layer, head].theme() == VOCAB[j]  # themes count both signs
    assert len(result.heads) == 8  # 2 layers x 4 heads
    rep = result[0, 1]
    assert len(rep.directions) == len(rep.s) * 2 * 2  # every direction, both sides, both signs


def test_json_round_trip_and_summary(tiny_model, tmp_path):
    result = inspect_model(load_model(tiny_model), ConceptExplainer(VOCAB, k=2, cache_dir=tmp_path), layers=[-1], heads=[0, 2], n_directions=3, progress=False)
    assert sorted(result.heads) == [(1, 0), (1, 2)]
    path = tmp_path / "r.json"
    result.to_json(path)
    back = Inspection.from_json(path)
    assert back.to_dict() == result.to_dict()
    assert json.loads(result.to_json())["heads"][0]["layer"] == 1
    text = result.summary(n_directions=2)
    assert "L1  H0" in text and "w1 +:" in text
    with pytest.raises(WeightscopeError, match="not a weightscope inspection JSON"):
        Inspection.from_json('{"model": 1}')
    with pytest.raises(WeightscopeError, match="layer 0 head 1 was not inspected"):
        result[0, 1]


def test_bad_inputs(tiny_model, tmp_path):
    loaded = load_model(tiny_model)
    with pytest.raises(WeightscopeError, match=r"k = 21 must be between 1 and the vocabulary size \(20\)"):
        inspect_model(loaded, ConceptExplainer(VOCAB, k=21, cache_dir=tmp_path), progress=False)
    with pytest.raises(WeightscopeError, match="layer 7 is out of range"):
        inspect_model(loaded, ConceptExplainer(VOCAB, cache_dir=tmp_path), layers=[7], progress=False)
    with pytest.raises(WeightscopeError, match="sides must be"):
        inspect_model(loaded, ConceptExplainer(VOCAB, cache_dir=tmp_path), sides=("left",), progress=False)


@pytest.mark.parametrize("argv, message", [
    (["--layers", "9"], "layer 9 is out of range"),
    (["--heads", "0,4"], "head 4 is out of range"),
    (["--vocab", "MISSING/vocab.txt"], "neither a built-in name"),
    (["--vocab", "EMPTY"], "empty"),
    (["--k", "5000", "--vocab", "colors"], "must be between 1 and the vocabulary size"),
    (["--layers", "x"], "cannot read index list"),
])
def test_cli_errors_are_one_line_with_exit_2(argv, message, tiny_name, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    argv = [str(empty) if a == "EMPTY" else a for a in argv]
    code = main(["inspect", tiny_name, "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_cli_writes_json_and_html(tiny_name, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    vocab = tmp_path / "v.txt"
    vocab.write_text("\n".join(VOCAB))
    code = main(["inspect", tiny_name, "--vocab", str(vocab), "--k", "3", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0 and "theme:" in out and "random weights" in out
    html = (tmp_path / "out" / "report.html").read_text()
    # one figure (the spectra); the theme map is an HTML grid with a cell per head (2 layers x 4 heads)
    assert html.count("data:image/png;base64,") == 1 and "Layer 1, head 3" in html
    grid = html.split("<table class='grid-map'>", 1)[1].split("</table>", 1)[0]
    assert grid.count("<td") >= 8
    back = Inspection.from_json(tmp_path / "out" / "inspection.json")
    assert len(back.heads) == 8


def shapes_world_share(result, n_directions=8):
    """Share of leading write directions (both signs) whose top concept is a shapes-world concept, and chance."""
    from weightscope.concepts.vocab import load_vocabulary

    shapes = set(load_vocabulary("shapes_world"))
    tops = [rep.direction(i, "write", sign).concepts[:1]
            for rep in result.heads.values() for i in range(min(n_directions, len(rep.s))) for sign in (1, -1)]
    return sum(bool(t) and t[0] in shapes for t in tops) / len(tops), len(shapes) / result.vocabulary_size


def test_bundled_model_heads_are_explained_by_its_world(tmp_path):
    """Issue 6: top 8 write directions of the last two layers, shapes-world + 5,000 general distractors.

    Measured on the shipped base model: 77 % (99/128) with the default (L2) normalisation (23 % with SpLiCE's);
    chance 3.3 %.
    Asserted: a clear majority, at least 50 points above chance.
    """
    result = inspect_model(None, ConceptExplainer("shapes_world,general:5000", cache_dir=tmp_path), layers=[-2, -1], n_directions=8, progress=False)
    share, chance = shapes_world_share(result)
    assert result.settings["normalize"] == "l2"
    assert chance < 0.05
    assert share >= 0.6 and share >= chance + 0.5, (share, chance)
