"""SING part 2 end to end: a trained classifier through a translator (weightscope.analyses.sing.classifier, `sing --classifier`).

The runs are made small (fewer fit and analysed images) by patching the module's sizes; the statistics themselves
are tested in test_sing_statistics.py, the translator and steering in test_sing_translator.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from weightscope.cli import main
from weightscope import bundled as B
from weightscope.bundled import load_classifier
from weightscope.core.errors import WeightscopeError
from weightscope.shapes import world
from weightscope.analyses.sing import classifier as ca
from weightscope.analyses.sing import head_geometry
from weightscope.analyses.sing.analysis import text_embeddings
from weightscope.analyses.sing.steering import gradient_path, steer_through
from weightscope.analyses.sing.translator import identity_translator, load_translator, save_translator


@pytest.fixture()
def small(monkeypatch, tmp_path):
    monkeypatch.setattr(B, "N_FIT_IMAGES", 600)
    monkeypatch.setattr(B, "N_IMAGES", 12)
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bundled_clip():
    from weightscope.bundled import load_model

    return load_model()


@pytest.mark.parametrize("name", ["bundled-cnn", "bundled-vit"])
def test_steered_features_keep_every_logit_through_the_classifiers_own_linear(name, bundled_clip):
    """Acceptance: both shipped classifiers, both paths, logits through the module's own nn.Linear <= 1e-6 relative,
    prediction unchanged."""
    clf = load_classifier(name)
    T = B.shipped_translator(name, bundled_clip, n_images=600)
    images, _ = world.single_objects(6, 4321, spurious_strength=None)
    feats = clf.features(images)
    texts = text_embeddings(bundled_clip, ["a red object", "an image of a star", "an object in the top left"])
    geom = head_geometry(clf.head)
    fc = dict(clf.module.named_modules())[clf.head_name].double()
    worst, checked = 0.0, 0

    def reachable(path, *args):
        try:
            return [path(*args)]
        except WeightscopeError as err:     # a flow that stalls below IS = 40 deg (steering away, mostly)
            assert "out of reach" in str(err)
            return []

    for f in feats:
        base = fc(torch.from_numpy(f)).detach().numpy()
        for t in texts:
            for st in (reachable(gradient_path, geom, T, f, t, 40.0, 1) + reachable(gradient_path, geom, T, f, t, 40.0, -1)
                       + [steer_through(geom, T, f, t, 40.0, 1)]):
                checked += 1
                assert abs(st.image_score - 40.0) < 1e-5
                moved = fc(torch.from_numpy(st.f_tilde)).detach().numpy()
                worst = max(worst, float(np.max(np.abs(moved - base)) / np.max(np.abs(base))))
                assert np.argmax(moved) == np.argmax(base)
                assert np.linalg.norm(st.f_tilde - f) > 1e-3 * np.linalg.norm(f)   # it did move
    assert worst <= 1e-6 and checked >= 2 * len(feats) * len(texts)


def test_cli_runs_a_shipped_classifier_and_writes_a_reusable_translator(small, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sing", "--classifier", "bundled-cnn", "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "sing.json").read_text())
    assert data["format"] == "weightscope-sing-classifier/1" and data["null_dim"] == 56 and data["n_images"] == 12
    assert set(data["statistics"]["per_family"]) == {"shape", "colour", "size", "position", "background"}
    assert data["translator"]["report"]["n_train"] + data["translator"]["report"]["n_test"] == 600
    assert data["example"]["logit_change"] <= 1e-6 and data["example"]["prediction_kept"]
    html = (out / "sing.html").read_text()
    assert "Translator" in html and "SING" in html and html.count("data:image/png;base64") >= 3
    printed = capsys.readouterr().out
    assert "held-out mean cosine" in printed and "class leakage" in printed
    # the written translator is the fitted one, and reusing it gives the same statistics
    T = load_translator(out / "translator.safetensors")
    assert T.report.mean_cosine == pytest.approx(data["translator"]["report"]["mean_cosine"], abs=1e-6)
    again = tmp_path / "again"
    assert main(["sing", "--classifier", "bundled-cnn", "--translator", str(out / "translator.safetensors"),
                 "--out", str(again), "--quiet"]) == 0
    second = json.loads((again / "sing.json").read_text())
    assert second["statistics"]["per_text"] == data["statistics"]["per_text"]
    # the translator used is written beside the reports (a copy of the loaded one), and reading it in place works
    np.testing.assert_array_equal(load_translator(again / "translator.safetensors").weights[0], T.weights[0])
    assert main(["sing", "--classifier", "bundled-cnn", "--translator", str(again / "translator.safetensors"),
                 "--out", str(again), "--quiet"]) == 0
    assert json.loads((again / "sing.json").read_text())["statistics"]["per_text"] == data["statistics"]["per_text"]
    # a translator fitted for the CNN is refused for the ViT
    assert main(["sing", "--classifier", "bundled-vit", "--translator", str(out / "translator.safetensors"),
                 "--out", str(tmp_path / "vit"), "--quiet"]) == 2
    assert "was fitted for another classifier (bundled-cnn, not bundled-vit)" in capsys.readouterr().err
    # visibility through T, by construction with scipy: the share of each spliced concept outside row(N M)
    import scipy.linalg

    from weightscope.concepts.embed import embed_concepts
    from weightscope.bundled import load_model
    from weightscope.concepts.vocab import load_vocabulary

    loaded = load_model()
    concepts = load_vocabulary("shapes_world")
    D = embed_concepts(loaded.model, loaded.tokenizer, concepts, normalize="none", progress=False).astype(np.float64)
    D = D / np.linalg.norm(D, axis=1, keepdims=True)
    D = D - D.mean(axis=0)
    N = scipy.linalg.null_space(load_classifier("bundled-cnn").head.weight)          # (64, 56)
    S = scipy.linalg.orth((N.T @ T.linear_map[0]).T)                               # (64, 56): T(null space)
    expected = 1.0 - np.sum((D @ S) ** 2, axis=1) / np.sum(D ** 2, axis=1)
    got = np.array([data["visibility"][c] for c in concepts])
    assert data["seen_dim"] == 64 - S.shape[1] == 8
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert data["families"] and data["directions"][0]["space"] == "row"


def _write_images(folder, n=24, seed=5):
    folder.mkdir()
    images, _ = world.single_objects(n, seed, spurious_strength=None)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"img{i:03d}.png")
    return folder


class _Tiny(nn.Module):
    def __init__(self, tail=None, n_classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(8, 16), nn.ReLU())
        self.fc = nn.Linear(16, n_classes)
        self.tail = tail

    def forward(self, x):
        y = self.fc(self.body(x))
        return self.tail(y) if self.tail is not None else y


def test_a_users_pickled_classifier_on_a_folder_with_a_texts_file(small, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(_Tiny(), path)
    (tmp_path / "tiny.pt.json").write_text(json.dumps({"image_size": 48, "class_names": ["a", "b", "c"]}))
    images = _write_images(tmp_path / "imgs")
    texts = tmp_path / "texts.txt"
    texts.write_text("# attributes\na red object\n\na blue background\n")
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    out = tmp_path / "out"
    assert main(["sing", "--classifier", str(path), "--trust-checkpoint", "--images", str(images), "--texts",
                 str(texts), "--text", "a circle", "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "sing.json").read_text())
    assert data["null_dim"] == 13 and data["n_images"] == 24 and data["classes"] == ["a", "b", "c"]
    assert [d["text"] for d in data["statistics"]["per_text"]] == ["a red object", "a blue background", "a circle"]
    assert data["translator"]["report"]["n_train"] + data["translator"]["report"]["n_test"] == 24
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before     # inputs untouched


def test_an_empty_null_space_and_a_poor_translator_are_said_not_hidden(small, tmp_path, capsys):
    torch.save(_Tiny(n_classes=16), tmp_path / "full.pt")
    images = _write_images(tmp_path / "imgs", n=12)
    args = ["sing", "--classifier", str(tmp_path / "full.pt"), "--trust-checkpoint", "--images", str(images),
            "--out", str(tmp_path / "out"), "--quiet"]
    assert main(args) == 2                       # no class names and no texts: nothing to score, said at once
    assert "has no class names" in capsys.readouterr().err
    assert main([*args, "--text", "a red object"]) == 0
    data = json.loads((tmp_path / "out" / "sing.json").read_text())
    assert data["null_dim"] == 0 and data["statistics"]["overall"]["share_reachable"] == 0
    assert any("null space is empty" in w for w in data["warnings"])
    assert any("explains little" in w for w in data["warnings"])        # 12 images cannot fit 16 -> 64
    assert any("no class names" in w for w in data["warnings"]) and data["class_leakage"]["mean_abs_as"] is None
    assert "note: the head's null space is empty" in capsys.readouterr().out


@pytest.mark.parametrize("case, message", [
    ("softmax", "is not the output of its last nn.Linear"),
    ("width", "translator maps width 32 -> 32 but the classifier's features have width 64"),
    ("empty", "no images"),
    ("nofolder", "give a folder of images"),
    ("texts", "holds no texts"),
    ("kind", "neither a file nor a kind to fit"),
    ("state-dict", "--images cannot be used"),
    ("no-classifier", "--translator needs --classifier"),
])
def test_bad_input_is_one_line_exit_2_before_the_clip_model_loads(case, message, tmp_path, monkeypatch, capsys):
    import weightscope.models.load

    def no_loading(*a, **k):
        raise AssertionError("bad input must be refused before the CLIP model is loaded")

    monkeypatch.setattr(weightscope.models.load, "load_model", no_loading)
    args = ["--classifier", "bundled-cnn"]
    if case == "softmax":
        torch.save(_Tiny(tail=nn.Softmax(dim=1)), tmp_path / "soft.pt")
        args = ["--classifier", str(tmp_path / "soft.pt"), "--trust-checkpoint", "--images",
                str(_write_images(tmp_path / "imgs", n=2))]
    elif case == "width":
        save_translator(identity_translator(32), tmp_path / "t32.safetensors")
        args += ["--translator", str(tmp_path / "t32.safetensors")]
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        args += ["--images", str(tmp_path / "empty")]
    elif case == "nofolder":
        args += ["--images", str(tmp_path / "missing")]
    elif case == "texts":
        (tmp_path / "t.txt").write_text("\n# nothing\n")
        args += ["--texts", str(tmp_path / "t.txt")]
    elif case == "kind":
        args += ["--translator", "ridge"]
    elif case == "state-dict":
        torch.save(_Tiny().state_dict(), tmp_path / "sd.pt")
        args = ["--classifier", str(tmp_path / "sd.pt"), "--images", str(_write_images(tmp_path / "imgs", n=2))]
    elif case == "no-classifier":
        args = ["--translator", "linear"]
    assert main(["sing", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and err.startswith("weightscope sing: error:"), err
    assert not (tmp_path / "out").exists()


def test_a_translator_is_refused_when_the_classifiers_preprocessing_changed(small, tmp_path, capsys):
    path = tmp_path / "tiny.pt"
    torch.save(_Tiny(), path)
    sidecar = tmp_path / "tiny.pt.json"
    sidecar.write_text(json.dumps({"image_size": 48, "class_names": ["a", "b", "c"]}))
    images = _write_images(tmp_path / "imgs")
    args = ["sing", "--classifier", str(path), "--trust-checkpoint", "--images", str(images), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    sidecar.write_text(json.dumps({"image_size": 64, "class_names": ["a", "b", "c"]}))
    assert main([*args, "--translator", str(tmp_path / "one" / "translator.safetensors"),
                 "--out", str(tmp_path / "two")]) == 2
    assert "fitted for another input preprocessing" in capsys.readouterr().err
    assert not (tmp_path / "two").exists()


def test_unimportable_pickles_say_what_to_do(tmp_path, monkeypatch, capsys):
    import sys
    import types

    mod = types.ModuleType("ws_tmp_net")
    mod.Net = type("Net", (_Tiny,), {"__module__": "ws_tmp_net"})
    monkeypatch.setitem(sys.modules, "ws_tmp_net", mod)
    torch.save(mod.Net(), tmp_path / "net.pt")
    monkeypatch.delitem(sys.modules, "ws_tmp_net")
    assert main(["sing", "--classifier", str(tmp_path / "net.pt"), "--trust-checkpoint", "--images",
                 str(_write_images(tmp_path / "imgs", n=2)), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "module 'ws_tmp_net'" in err and "PYTHONPATH" in err


def test_read_texts_normalises_and_refuses_repeats(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("\ufeffa  red\tobject\n# comment\n\na circle\n", encoding="utf-8")
    assert ca.read_texts(p) == ["a red object", "a circle"]
    p.write_text("a circle\nA Circle\n")
    with pytest.raises(Exception, match="repeats"):
        ca.read_texts(p)


def test_shapes_texts_cover_every_attribute_value_with_the_right_article():
    fams = B.shapes_texts()
    assert [len(fams[f]) for f in ("shape", "colour", "size", "position", "background")] == [
        len(world.SHAPES), len(world.COLOUR_NAMES), len(world.SIZES), len(world.POSITIONS), len(world.BACKGROUND_NAMES)]
    assert "an oval" in fams["shape"] and "an orange object" in fams["colour"]
    assert not any(t.startswith(("a a", "a e", "a i", "a o", "a u")) for group in fams.values() for t in group)
