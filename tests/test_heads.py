"""weightscope.models.linear_heads: one linear-head description from arrays, torch modules, state dicts and CLIP zero-shot."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from weightscope.core.errors import WeightscopeError
from weightscope.analyses.zeroshot import zero_shot_head
from weightscope.models.linear_heads import LinearHead, head_from_arrays, linear_head


def test_arrays_logits_and_defaults():
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(3, 5)), rng.normal(size=3)
    head = head_from_arrays(W.astype(np.float32), b, ["a", "b", "c"], feature_space="toy")
    assert isinstance(head, LinearHead) and head.weight.dtype == np.float64
    assert (head.n_classes, head.n_features, head.feature_space) == (3, 5, "toy")
    x = rng.normal(size=(4, 5))
    assert np.allclose(head.logits(x), np.einsum("nf,cf->nc", x, W.astype(np.float32)) + b)
    assert head.logits(x[0]).shape == (3,)
    plain = head_from_arrays(W)
    assert plain.class_names == ("class 0", "class 1", "class 2") and np.array_equal(plain.bias, np.zeros(3))
    with pytest.raises(WeightscopeError, match="width 4"):
        head.logits(np.ones(4))


@pytest.mark.parametrize("kwargs, message", [
    ({"weight": np.ones(5)}, "2-D"),
    ({"weight": np.ones((1, 5))}, "at least 2 classes"),
    ({"weight": np.array([[1.0, np.nan], [0.0, 1.0]])}, "NaN"),
    ({"weight": np.eye(2), "bias": np.ones(3)}, "bias has 3 entries"),
    ({"weight": np.eye(2), "bias": [np.inf, 0]}, "bias holds NaN"),
    ({"weight": np.eye(2), "class_names": ["x"]}, "1 class names"),
    ({"weight": np.eye(3), "class_names": ["x", "y", "x"]}, "duplicate class names: x"),
])
def test_arrays_bad_input(kwargs, message):
    with pytest.raises(WeightscopeError, match=message):
        head_from_arrays(**kwargs)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU())
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.body(x))


def test_module_head_is_the_last_linear_and_matches_its_forward():
    torch.manual_seed(0)
    net = _Net().eval()
    head = linear_head(net, ["a", "b", "c"])
    assert head.feature_space == "input of fc" and head.weight.shape == (3, 8)
    feats = torch.randn(5, 8)
    with torch.no_grad():
        ref = net.fc(feats).double().numpy()
    assert np.allclose(head.logits(feats.double().numpy()), ref, atol=1e-6)
    assert linear_head(net, key="body.0").weight.shape == (8, 6)
    with pytest.raises(WeightscopeError, match="not an nn.Linear"):
        linear_head(net, key="body.1")
    with pytest.raises(WeightscopeError, match="has no nn.Linear layer"):
        linear_head(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()))
    with pytest.raises(WeightscopeError, match="torch module or a state dict"):
        linear_head([1, 2, 3])


def test_state_dict_head_picks_the_last_matrix_and_its_bias():
    torch.manual_seed(1)
    net = _Net()
    sd = net.state_dict()
    head = linear_head(sd)
    assert head.feature_space == "input of fc.weight"
    assert np.array_equal(head.weight, sd["fc.weight"].double().numpy())
    assert np.array_equal(head.bias, sd["fc.bias"].double().numpy())
    assert np.array_equal(linear_head(sd, key="body.0.weight").weight, sd["body.0.weight"].double().numpy())
    with pytest.raises(WeightscopeError, match="no tensor 'nope.weight'"):
        linear_head(sd, key="nope.weight")
    conv_only = {"conv.weight": torch.zeros(4, 3, 3, 3), "bn.bias": torch.zeros(4), "idx": torch.zeros(2, 2, dtype=torch.long)}
    with pytest.raises(WeightscopeError, match="holds no 2-D weight"):
        linear_head(conv_only)


def test_zero_shot_head_rows_are_normalised_prompt_means():
    from weightscope.bundled import load_model

    loaded = load_model()
    names, templates = ["circle", "square"], ["a {}", "a photo of a {}"]
    head = zero_shot_head(loaded, names, templates)
    with torch.no_grad():
        rows = []
        for n in names:
            e = loaded.model.encode_text(loaded.tokenizer([t.format(n) for t in templates])).double()
            e = torch.nn.functional.normalize(e, dim=-1).mean(0)
            rows.append((e / e.norm()).numpy())
    assert np.allclose(head.weight, np.stack(rows), atol=1e-5)
    assert head.class_names == ("circle", "square") and head.feature_space.startswith("joint")
    assert np.array_equal(head.bias, np.zeros(2))
