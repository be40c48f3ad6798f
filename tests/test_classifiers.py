"""The shipped shapes-world classifiers and the general classifier loader (weightscope.models.classifiers)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from weightscope.bundled import load_classifier
from weightscope.core.errors import WeightscopeError
from weightscope.shapes import world
from weightscope.shapes.classifiers import (bundled_path, build_classifier, config_path, default_config,
                                            save_classifier)
from weightscope.shapes.evaluate import images_to_tensor
from weightscope.shapes.train_classifiers import HELDOUT_N, HELDOUT_SEED, RECIPES, main, reproduce, train

ARCHS = ("cnn", "vit")


@pytest.fixture(scope="module")
def heldout():
    images, scenes = world.single_objects(HELDOUT_N, HELDOUT_SEED, spurious_strength=None)
    return images, scenes.shape[:, 0]


@pytest.fixture(scope="module", params=ARCHS)
def shipped(request):
    return load_classifier(f"bundled-{request.param}")


def test_shipped_classifiers_reach_90_percent_on_heldout_shapes(shipped, heldout):
    images, labels = heldout
    acc = float((shipped.logits(images).argmax(1) == labels).mean())
    print(f"{shipped.name}: held-out shape accuracy {acc:.4f} on {len(labels)} images (seed {HELDOUT_SEED})")
    assert acc >= 0.90
    assert shipped.class_names == world.SHAPES and shipped.head.weight.shape == (8, 64)
    assert shipped.source == "bundled" and shipped.head_name == "fc"


def test_features_through_the_head_are_the_modules_own_logits(shipped, heldout):
    images = heldout[0][:150]
    feats, logits = shipped.features_and_logits(images, batch_size=64)
    assert feats.shape == (150, 64) and feats.dtype == np.float64
    np.testing.assert_array_equal(shipped.features(images[:10]), feats[:10])
    np.testing.assert_array_equal(shipped.logits(images[:10]), logits[:10])
    # the module's own forward on the training-time conversion, not through Classifier
    with torch.no_grad():
        own = shipped.module(images_to_tensor(images, shipped.mean, shipped.std)).double().numpy()
    np.testing.assert_allclose(logits, own, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(feats @ shipped.head.weight.T + shipped.head.bias, own, rtol=1e-5, atol=1e-5)


def test_shipped_files_are_small_and_carry_their_training_record():
    for arch in ARCHS:
        path = bundled_path(arch)
        size = path.stat().st_size
        print(f"{path.name}: {size / 1e6:.2f} MB")
        assert size <= 2_000_000
        config = json.loads(config_path(path).read_text())
        assert config["arch"] == arch and config["training"]["heldout_accuracy"] >= 0.90
        assert {k: config["training"][k] for k in RECIPES[arch]} == RECIPES[arch]
        assert all(v.dtype == torch.float32 for v in load_file(str(path)).values())


def test_save_and_load_round_trip_is_exact(shipped, heldout, tmp_path):
    arch = shipped.name.removeprefix("bundled-")
    config = json.loads(config_path(bundled_path(arch)).read_text())
    path = save_classifier(shipped.module, config, tmp_path / "copy.safetensors")
    assert json.loads(config_path(path).read_text()) == config
    again = load_classifier(str(path))
    x = shipped.preprocess(heldout[0][:64])
    with torch.no_grad():
        assert torch.equal(again.module(x), shipped.module(x))
    assert again.name == "copy.safetensors" and again.source == str(path)
    # without its .json the config is read from the safetensors metadata
    config_path(path).unlink()
    alone = load_classifier(str(path))
    with torch.no_grad():
        assert torch.equal(alone.module(x), shipped.module(x))


def test_training_is_a_pure_function_of_its_arguments(tmp_path):
    runs = [train("vit", tmp_path / f"run{i}.safetensors", steps=2, batch_size=8, warmup=1, heldout_n=50,
                  quiet=True)
            for i in range(2)]
    a, b = (load_file(str(tmp_path / f"run{i}.safetensors")) for i in range(2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fresh = build_classifier(default_config("vit"))
    assert not torch.equal(a["fc.weight"], fresh.state_dict()["fc.weight"])  # it did train
    assert runs[0]["heldout_accuracy"] == runs[1]["heldout_accuracy"]


def test_training_refuses_bad_outputs_before_it_starts(capsys):
    t0 = time.perf_counter()
    with pytest.raises(WeightscopeError, match="shipped with weightscope"):
        train("cnn", bundled_path("cnn"), steps=10_000)
    with pytest.raises(WeightscopeError, match="steps > 0"):
        train("vit", "x.safetensors", steps=0)
    assert main(["--arch", "cnn", "--out", str(bundled_path("vit")), "--quiet"]) == 2
    assert "refusing to write" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 5


# ----------------------------------------------------------------------------------------------- preprocessing

def test_preprocess_resizes_other_sizes_like_pil_bilinear(shipped, heldout):
    big = np.stack([np.asarray(Image.fromarray(im).resize((96, 96), Image.NEAREST)) for im in heldout[0][:8]])
    # PIL's own antialiased bilinear reduction is an independent reference for the resize
    pil = np.stack([np.asarray(Image.fromarray(im).resize((48, 48), Image.BILINEAR)) for im in big])
    got, ref = shipped.preprocess(big), shipped.preprocess(pil)
    assert got.shape == (8, 3, 48, 48)
    step = 1.0 / 255 / min(shipped.std)
    assert float((got - ref).abs().max()) <= 1.01 * step  # PIL rounds to uint8: at most one grey level
    # a non-square image is centre-cropped to its shorter side
    wide = np.concatenate([np.zeros((8, 48, 8, 3), np.uint8), heldout[0][:8], np.zeros((8, 48, 8, 3), np.uint8)], 2)
    assert torch.equal(shipped.preprocess(wide), shipped.preprocess(heldout[0][:8]))


def test_preprocess_pil_equals_array(shipped, heldout):
    images = heldout[0][:5]
    pils = [Image.fromarray(im) for im in images]
    assert torch.equal(shipped.preprocess(pils), shipped.preprocess(images))
    np.testing.assert_array_equal(shipped.features(pils), shipped.features(images))


@pytest.mark.parametrize("bad", [np.zeros((2, 48, 48, 3), np.float32), np.zeros((48, 48, 3), np.uint8), "x",
                                 np.zeros((0, 48, 48, 3), np.uint8)])
def test_preprocess_refuses_what_is_not_images(shipped, bad):
    for call in (shipped.preprocess, shipped.features):
        with pytest.raises(WeightscopeError) as err:
            call(bad)
        assert "\n" not in str(err.value)


def test_features_of_a_preprocessed_tensor_and_of_mixed_sizes(shipped, heldout):
    images = heldout[0][:6]
    want = shipped.features(images, batch_size=4)
    np.testing.assert_array_equal(shipped.features(shipped.preprocess(images), batch_size=4), want)
    # a list of PIL images of different sizes: each resized on its own
    big = [Image.fromarray(im).resize((96, 96)) for im in images[3:]]
    got = shipped.features([Image.fromarray(im) for im in images[:3]] + big, batch_size=4)
    np.testing.assert_array_equal(got[:3], want[:3])
    np.testing.assert_allclose(got[3:], shipped.features(np.stack([np.asarray(b) for b in big])), rtol=1e-6,
                               atol=1e-6)
    assert np.abs(got[3:] - want[3:]).max() > 1e-3  # they were resized: not the 48 px originals
    with pytest.raises(WeightscopeError, match="float tensor"):
        shipped.features(torch.zeros(2, 48, 48, 3))


# ----------------------------------------------------------------------------------------------- loader errors

class HeadFirst(nn.Module):
    """The head is registered before the projection it reads: order of registration != order of calls."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(6, 3)
        self.proj = nn.Linear(3 * 8 * 8, 6)

    def forward(self, x):
        return self.head(torch.tanh(self.proj(x.flatten(1))))


class AuxAfterHead(nn.Module):
    """An auxiliary Linear runs after the head; the output is still the head's."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(3 * 8 * 8, 6)
        self.fc = nn.Linear(6, 4)
        self.aux = nn.Linear(6, 2)

    def forward(self, x):
        f = torch.relu(self.body(x.flatten(1)))
        logits = self.fc(f)
        self.last_aux = self.aux(f)
        return logits


class SpareLinear(nn.Module):
    """Holds an nn.Linear its forward never calls."""

    def __init__(self):
        super().__init__()
        self.spare = nn.Linear(3, 2)

    def forward(self, x):
        return x.mean(dim=(2, 3))


def _small(*tail):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5), *tail)


def _error(spec, **kw) -> str:
    with pytest.raises(WeightscopeError) as err:
        load_classifier(str(spec), **kw)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_pickled_module_with_sidecar_uses_the_head_its_forward_calls_last(tmp_path):
    torch.manual_seed(0)
    model = HeadFirst()
    torch.save(model, tmp_path / "m.pt")
    (tmp_path / "m.json").write_text(json.dumps({"image_size": 8, "mean": [0.5] * 3, "std": [0.25] * 3,
                                                 "class_names": ["a", "b", "c"]}))
    clf = load_classifier(str(tmp_path / "m.pt"), trust=True)
    assert clf.head_name == "head" and clf.class_names == ("a", "b", "c") and clf.image_size == 8
    assert "m.json" in clf.source
    images = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        want = torch.tanh(model.proj(x.flatten(1))).double().numpy()
    np.testing.assert_allclose(clf.features(images), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(clf.head.weight, model.head.weight.detach().double().numpy())


def test_the_head_is_the_linear_whose_output_is_returned(tmp_path):
    torch.manual_seed(0)
    torch.save(AuxAfterHead(), tmp_path / "aux.pt")
    (tmp_path / "aux.json").write_text(json.dumps({"image_size": 8}))
    clf = load_classifier(str(tmp_path / "aux.pt"), trust=True)
    assert clf.head_name == "fc" and clf.head.weight.shape == (4, 6)
    x = np.random.default_rng(2).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    feats, logits = clf.features_and_logits(x)
    np.testing.assert_allclose(feats @ clf.head.weight.T + clf.head.bias, logits, rtol=1e-6, atol=1e-6)


def test_pickled_module_without_sidecar_gets_imagenet_preprocessing(tmp_path):
    model = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 7))
    torch.save(model, tmp_path / "net.pth")
    clf = load_classifier(str(tmp_path / "net.pth"), trust=True)
    assert clf.image_size == 224 and clf.mean == (0.485, 0.456, 0.406) and "ImageNet defaults" in clf.source
    assert clf.class_names == tuple(f"class {i}" for i in range(7))
    assert "3 class names for a head with 7 classes" in _error(tmp_path / "net.pth", trust=True,
                                                                class_names=["a", "b", "c"])


@pytest.mark.parametrize("tail, words", [
    ((nn.Softmax(dim=1),), "not the output of its last nn.Linear (module '1')"),
    ((nn.ReLU(),), "something (a softmax, a nonlinearity, another layer) follows it"),
    ((nn.Linear(5, 5), nn.Tanh()), "not the output of its last nn.Linear (module '2')"),
])
def test_a_classifier_whose_last_layer_is_not_linear_is_refused(tmp_path, tail, words):
    torch.save(_small(*tail), tmp_path / "m.pt")
    (tmp_path / "m.json").write_text(json.dumps({"image_size": 8}))
    assert words in _error(tmp_path / "m.pt", trust=True)


def test_modules_without_a_called_linear_are_refused(tmp_path):
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), tmp_path / "conv.pt")
    assert "has no nn.Linear" in _error(tmp_path / "conv.pt", trust=True)
    torch.save(SpareLinear(), tmp_path / "unused.pt")
    assert "calls none of its nn.Linear" in _error(tmp_path / "unused.pt", trust=True)


def test_weights_without_architecture_are_refused(tmp_path):
    model = _small()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "sd.safetensors"))
    # its header length is 128: the file starts with 0x80 like a pickle, and must still read as safetensors
    assert (tmp_path / "sd.safetensors").read_bytes()[:2] == b"\x80\x00"
    for name in ("sd.pt", "ckpt.pth", "sd.safetensors"):
        message = _error(tmp_path / name, trust=True)
        assert "only weights" in message and "architecture" in message and "torch.save(model, path)" in message


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_untrusted_pickles_missing_and_foreign_files_are_refused(tmp_path):
    torch.save(_small(), tmp_path / "m.pt")
    message = _error(tmp_path / "m.pt")
    assert "--trust-checkpoint" in message and "runs code" in message
    assert "not found" in _error(tmp_path / "absent.pt")
    assert "folder" in _error(tmp_path)
    (tmp_path / "junk.bin").write_bytes(b"hello, not a model")
    assert "neither a safetensors nor a torch file" in _error(tmp_path / "junk.bin")
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "the file is empty" in _error(tmp_path / "empty.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "m.pt").read_bytes()[:200])
    assert "truncated" in _error(tmp_path / "cut.pt", trust=True)
    torch.jit.save(torch.jit.script(_small()), str(tmp_path / "scripted.pt"))
    assert "TorchScript" in _error(tmp_path / "scripted.pt", trust=True)
    assert "bundled-cnn, bundled-vit" in _error("bundled-resnet")
    (tmp_path / "m.json").write_text("{not json")
    assert "cannot read the classifier's preprocessing" in _error(tmp_path / "m.pt", trust=True)


def test_untrusted_pickle_is_refused_before_it_runs(tmp_path):
    # a pickle whose loading would create a file: refused without trust, nothing runs
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    assert "--trust-checkpoint" in _error(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.slow
def test_reproduce_gives_the_shipped_classifiers_back(tmp_path):
    t0 = time.perf_counter()
    paths = reproduce(tmp_path)
    print(f"reproduce: {time.perf_counter() - t0:.0f} s wall")
    for arch, path in paths.items():
        made, shipped = load_file(str(path)), load_file(str(bundled_path(arch)))
        assert made.keys() == shipped.keys()
        assert all(torch.equal(made[k], shipped[k]) for k in made), arch
