"""Loading from names, local checkpoints and objects; every user mistake is one clear line."""
import pytest
import torch
from safetensors.torch import save_file

from weightscope import WeightscopeError, describe_model, load_model

from conftest import TINY_CFG, make_model, register_config


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_from_safetensors_pt_and_object(tiny_name, tiny_model, tmp_path):
    sd = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    save_file(sd, tmp_path / "m.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "m.pt")
    for path in ("m.safetensors", "m.pt"):
        loaded = load_model(tiny_name, checkpoint=tmp_path / path)
        assert _same_weights(loaded.model, tiny_model)
        assert loaded.source == str(tmp_path / path) and loaded.name == tiny_name
        assert loaded.tokenizer(["a red circle"]).shape[0] == 1
    obj = load_model(tiny_model)
    assert obj.model is tiny_model and obj.source == "object"
    rand = load_model(tiny_name)
    assert rand.source == "random-init" and describe_model(rand).n_layers == 2


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(WeightscopeError, match=r"unknown model name 'ViT-B-61'.*did you mean"):
        load_model("ViT-B-61")


def test_unknown_model_name_suggests_the_bundled_names_too():
    with pytest.raises(WeightscopeError, match=r"unknown model name 'shapes-vt'.*did you mean shapes-vit"):
        load_model("shapes-vt")
    with pytest.raises(WeightscopeError, match=r"unknown model name 'bundeld'.*did you mean bundled"):
        load_model("bundeld")


def test_unknown_pretrained_tag_lists_known_tags():
    with pytest.raises(WeightscopeError, match=r"unknown pretrained tag 'nonsense' for ViT-B-32: known tags: .*openai"):
        load_model("ViT-B-32", pretrained="nonsense")


def test_missing_and_truncated_checkpoints(tiny_name, tiny_model, tmp_path):
    with pytest.raises(WeightscopeError, match="checkpoint file not found: .*nope.safetensors"):
        load_model(tiny_name, checkpoint=tmp_path / "nope.safetensors")
    sd = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    save_file(sd, tmp_path / "full.safetensors")
    torch.save(sd, tmp_path / "full.pt")
    for name in ("full.safetensors", "full.pt"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut-{name}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(WeightscopeError, match="cannot read checkpoint .*truncated or not a checkpoint"):
            load_model(tiny_name, checkpoint=cut)


def test_checkpoint_of_another_architecture(tiny_name, tmp_path):
    cfg = {**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], "width": 96}}
    other = make_model(register_config(tmp_path, "ws-test-wide", cfg))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, tmp_path / "wide.safetensors")
    with pytest.raises(WeightscopeError, match=rf"does not match architecture '{tiny_name}': .*shape mismatches \(e\.g\. visual\."):
        load_model(tiny_name, checkpoint=tmp_path / "wide.safetensors")


def test_contradictory_arguments():
    with pytest.raises(WeightscopeError, match="either pretrained"):
        load_model("ViT-B-32", pretrained="openai", checkpoint="x.pt")
    with pytest.raises(WeightscopeError, match="model must be an open_clip model name"):
        load_model(42)


def test_loading_a_checkpoint_does_not_log_random_init(caplog, tiny_name):
    """open_clip's "initialized randomly" warning is dropped when weights are loaded next, kept otherwise."""
    import logging

    with caplog.at_level(logging.WARNING):
        load_model()
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]
    with caplog.at_level(logging.WARNING):
        assert load_model(tiny_name).source == "random-init"
    assert [r for r in caplog.records if "initialized randomly" in r.getMessage()]
    assert not logging.getLogger().filters  # the filter is removed again
