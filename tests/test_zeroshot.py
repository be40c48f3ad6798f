"""weightscope.analyses.zeroshot: prompt-ensemble classifiers and grouped accuracy, checked by construction."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from weightscope.analyses import zeroshot
from weightscope.core.errors import WeightscopeError


class TableModel(torch.nn.Module):
    """A stand-in CLIP: text embedding looked up from a table keyed by the prompt, image embedding = input."""

    def __init__(self, table: dict[str, np.ndarray]):
        super().__init__()
        self.table = table
        self.prompts: list[str] = []

    def encode_text(self, tokens):
        return torch.tensor(np.stack([self.table[p] for p in tokens]), dtype=torch.float32)

    def encode_image(self, x):
        return x.float()


def identity_tokenizer(texts):
    return list(texts)


def test_classifier_is_normalised_mean_of_normalised_prompts():
    rng = np.random.default_rng(0)
    names = [["cat", "kitty"], "dog"]
    templates = ["a {}", "a photo of a {}"]
    prompts = ["a cat", "a photo of a cat", "a kitty", "a photo of a kitty", "a dog", "a photo of a dog"]
    table = {p: rng.normal(size=5) * rng.uniform(0.5, 3) for p in prompts}
    clf = zeroshot.build_classifier(TableModel(table), identity_tokenizer, names, templates)
    unit = {p: v / np.linalg.norm(v) for p, v in table.items()}
    cat = np.mean([unit[p] for p in prompts[:4]], axis=0)
    dog = np.mean([unit[p] for p in prompts[4:]], axis=0)
    expected = np.stack([cat / np.linalg.norm(cat), dog / np.linalg.norm(dog)])
    np.testing.assert_allclose(clf, expected, atol=1e-6)


def test_accuracy_and_groups_by_construction():
    clf = np.eye(3, dtype=np.float32)
    # image i points mostly at class pred[i]; scaled to check normalisation does not matter
    pred = np.array([0, 1, 2, 2, 1, 0, 0, 1])
    labels = np.array([0, 1, 2, 0, 1, 1, 0, 2])
    groups = np.array(["a", "a", "b", "b", "c", "c", "c", "c"])
    x = torch.tensor(np.eye(3)[pred] * 5 + 0.1, dtype=torch.float32)
    res = zeroshot.zero_shot_accuracy(TableModel({}), x, labels, clf, groups=groups, batch_size=3)
    np.testing.assert_array_equal(res["predictions"], pred)
    assert res["accuracy"] == pytest.approx(5 / 8)
    assert res["groups"] == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.5})
    assert res["worst_group"] == "b"  # tie with "c" goes to the first name
    assert res["worst_accuracy"] == pytest.approx(0.5)
    assert res["mean_group_accuracy"] == pytest.approx(2 / 3)


def test_preprocess_path_matches_tensor_path():
    clf = np.eye(2, dtype=np.float32)
    arrays = [np.array([1.0, 0.2]), np.array([0.1, 2.0]), np.array([3.0, 1.0])]
    res_pp = zeroshot.zero_shot_accuracy(TableModel({}), arrays, [0, 1, 1], clf,
                                         preprocess=lambda a: torch.tensor(a, dtype=torch.float32))
    res_t = zeroshot.zero_shot_accuracy(TableModel({}), torch.tensor(np.stack(arrays)), [0, 1, 1], clf)
    np.testing.assert_array_equal(res_pp["predictions"], [0, 1, 0])
    assert res_pp["accuracy"] == res_t["accuracy"] == pytest.approx(2 / 3)


def test_bad_input_raises():
    model = TableModel({"a x": np.ones(2)})
    with pytest.raises(WeightscopeError):
        zeroshot.build_classifier(model, identity_tokenizer, [], ["a {}"])
    with pytest.raises(WeightscopeError):
        zeroshot.build_classifier(model, identity_tokenizer, ["x"], ["no slot"])
    x = torch.ones(2, 2)
    with pytest.raises(WeightscopeError):
        zeroshot.zero_shot_accuracy(model, x, [0], np.eye(2))  # one label for two images
    with pytest.raises(WeightscopeError):
        zeroshot.zero_shot_accuracy(model, x, [0, 5], np.eye(2))  # label out of range
    with pytest.raises(WeightscopeError):
        zeroshot.zero_shot_accuracy(model, x, [0, 1], np.eye(3))  # width mismatch


def test_real_open_clip_model(tiny_model):
    """Works with a stock open_clip CLIP: the classifier has unit rows of the joint width."""
    import open_clip

    tok = open_clip.get_tokenizer("ViT-B-32")
    clf = zeroshot.build_classifier(tiny_model, tok, ["circle", ["square", "box"]], ["a {}", "a photo of a {}"])
    assert clf.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(clf, axis=1), 1.0, atol=1e-5)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    res = zeroshot.zero_shot_accuracy(tiny_model, x, np.zeros(6, int), clf, groups=[0, 0, 0, 1, 1, 1])
    direct = tiny_model.encode_image(x).detach().numpy() @ clf.T
    np.testing.assert_array_equal(res["predictions"], direct.argmax(1))
