"""joint.to_joint against the model itself: a residual direction pushed through the real ln_post and proj.

ln_post at the origin is linear in the odd part: ln(e v) - ln(-e v) = 2 e gamma P v / sqrt(e^2 var(v) + eps) with
P the centring projector, for every e > 0, so the central difference of the torch module's own ln_post + proj
at 0 points exactly along the linear joint map's direction, with no truncation error. The asymmetric fixture
has ln_post gains in 0.5-1.5 and a non-zero shift: leaving out the gain, or keeping the shift in the linear
map, turns these directions by far more than the tolerance.
"""
import copy

import numpy as np
import pytest
import torch

from weightscope import WeightscopeError, describe_model, to_joint


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _real_head(model):
    """float64 copies of the model's ln_post module and proj parameter: v (n, D) -> ln_post(v) @ proj (n, E)."""
    visual = copy.deepcopy(model.visual).double()

    def push(v):
        with torch.no_grad():
            return (visual.ln_post(torch.from_numpy(v)) @ visual.proj).numpy()

    return push, visual


@pytest.fixture(params=["asym_model", "asym_ls_model"])
def model(request):
    return request.getfixturevalue(request.param)


def _directions(width, n=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, width)) + 0.7  # a non-zero mean, which ln_post removes


def test_linear_map_is_the_real_ln_post_and_proj_differentiated(model):
    weights = describe_model(model)
    push, visual = _real_head(model)
    V = _directions(weights.width)
    for e in (1e-3, 1.0):  # exact for every step size: only the odd part of ln_post at 0 is used
        reference = _unit(push(e * V) - push(-e * V))
        np.testing.assert_allclose(to_joint(weights, V), reference, atol=1e-12)
    # one direction (D,) gives one joint direction (E,)
    np.testing.assert_allclose(to_joint(weights, V[0]), _unit(push(V[:1]) - push(-V[:1]))[0], atol=1e-12)
    # the gain matters on this model: the map without it is far off (cosine well below 1)
    no_gain = _unit((V - V.mean(1, keepdims=True)) @ visual.proj.detach().numpy())
    assert np.min(np.sum(no_gain * to_joint(weights, V), axis=1)) < 0.99


def test_affine_map_is_the_real_ln_post_and_proj(model):
    weights = describe_model(model)
    push, visual = _real_head(model)
    V = _directions(weights.width, seed=1)
    np.testing.assert_allclose(to_joint(weights, V, mode="affine"), _unit(push(V)), atol=1e-12)
    # the shift matters: it is what separates the two modes
    assert np.abs(visual.ln_post.bias.detach().numpy()).max() > 0.1
    assert np.min(np.sum(to_joint(weights, V, mode="affine") * to_joint(weights, V), axis=1)) < 0.99


def test_image_mean_is_subtracted_and_renormalised(model):
    weights = describe_model(model)
    push, _ = _real_head(model)
    V = _directions(weights.width, seed=2)
    mean = 0.4 * _unit(np.random.default_rng(3).normal(size=weights.embed_dim))
    z = _unit(push(V) - push(-V))
    np.testing.assert_allclose(to_joint(weights, V, image_mean=mean), _unit(z - mean), atol=1e-12)
    np.testing.assert_allclose(to_joint(weights, V, mode="affine", image_mean=mean), _unit(_unit(push(V)) - mean),
                               atol=1e-12)


def test_invariances_of_ln_post(model):
    """ln_post cannot see a direction's mean or its positive scale; a sign flip flips the joint direction."""
    weights = describe_model(model)
    V = _directions(weights.width, seed=4)
    z = to_joint(weights, V)
    np.testing.assert_allclose(to_joint(weights, 3.0 * V + 5.0), z, atol=1e-12)
    np.testing.assert_allclose(to_joint(weights, -V), -z, atol=1e-12)


def test_bad_arguments(asym_model):
    weights = describe_model(asym_model)
    V = _directions(weights.width)
    with pytest.raises(WeightscopeError, match="width 7"):
        to_joint(weights, np.ones((2, 7)))
    with pytest.raises(WeightscopeError, match="image_mean has shape"):
        to_joint(weights, V, image_mean=np.ones(5))
    with pytest.raises(WeightscopeError, match="unknown joint-space map"):
        to_joint(weights, V, mode="full")
