"""Issue 26 kind 7: every checkpoint weightscope writes loads by path alone, whatever route built the model; the
check runs in a fresh process, where no custom name is registered."""
import json
import subprocess
import sys

import open_clip
import pytest
import torch

import weightscope
from weightscope.analyses.edit import save_checkpoint

TINY = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 2, "layers": 2}}
VARIANT = {"embed_dim": 24, "quick_gelu": True, "init_logit_bias": -10.0,
           "vision_cfg": {"image_size": [32, 48], "layers": 1, "width": 48, "patch_size": 16, "head_width": 16,
                          "mlp_ratio": 2.0, "ls_init_value": 1e-4, "no_ln_pre": True, "pool_type": "avg"},
           "text_cfg": {"context_length": 8, "vocab_size": 500, "width": 32, "heads": 4, "layers": 1,
                        "no_causal_mask": True, "proj_bias": True, "pool_type": "last"}}

LOAD = """
import json, sys, torch
from weightscope.models.load import load_model
out = {}
for path in sys.argv[1:]:
    m = load_model(path)
    torch.manual_seed(0)
    h, w = m.model.visual.image_size
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        out[path] = [m.name, m.model.encode_image(x).tolist(), m.model.encode_text((torch.arange(m.model.context_length) % 400 + 1).repeat(2, 1)).tolist()]
print(json.dumps(out))
"""


def _outputs(model):
    torch.manual_seed(0)
    h, w = model.visual.image_size
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        return model.encode_image(x), model.encode_text((torch.arange(model.context_length) % 400 + 1).repeat(2, 1))


def test_checkpoint_loads_by_path(tmp_path):
    """The issue's input (a CLIP built from a custom config, passed as a module) and other routes: a variant
    config (QuickGELU, layer scale, no ln_pre, avg pool, logit bias, no causal mask, biased text projection),
    an edited custom model and the bundled model; each file loads by path in a fresh process, same outputs."""
    torch.manual_seed(1)
    models = {"custom": open_clip.CLIP(**TINY).eval(), "variant": open_clip.CLIP(**VARIANT).eval()}
    paths = {}
    for key, net in models.items():
        paths[key] = str(save_checkpoint(weightscope.load_model(net), tmp_path / f"{key}.safetensors")[0])
    edited = open_clip.CLIP(**TINY).eval()
    with torch.no_grad():
        edited.visual.proj.mul_(0.5)         # an edit made outside weightscope: a module, weights changed
    models["edited"] = edited
    paths["edited"] = str(save_checkpoint(weightscope.load_model(edited), tmp_path / "edited.safetensors")[0])
    bundled = weightscope.load_model()
    models["bundled"] = bundled.model
    paths["bundled"] = str(save_checkpoint(bundled, tmp_path / "bundled.safetensors")[0])
    arch = json.loads((tmp_path / "custom.safetensors.json").read_text())["architecture"]
    assert arch["name"].startswith("custom-clip-") and arch["config"]["vision_cfg"]["patch_size"] == 8

    run = subprocess.run([sys.executable, "-c", LOAD, *paths.values()], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    for key, net in models.items():
        name, img, txt = got[paths[key]]
        ref_img, ref_txt = _outputs(net)
        torch.testing.assert_close(torch.tensor(img), ref_img, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.tensor(txt), ref_txt, rtol=1e-5, atol=1e-6)
    assert got[paths["bundled"]][0] == "shapes-vit"


def test_checkpoint_loads_by_path_refuses_what_it_cannot_record(tmp_path):
    """A model whose config cannot be recovered (an attentional-pool vision tower) is not written at all."""
    cfg = json.loads(json.dumps(TINY))
    cfg["vision_cfg"].update(attentional_pool=True, attn_pooler_queries=4, attn_pooler_heads=2)
    with pytest.raises(weightscope.WeightscopeError, match="would not load by path"):
        save_checkpoint(weightscope.load_model(open_clip.CLIP(**cfg)), tmp_path / "pool.safetensors")
    assert not list(tmp_path.iterdir())
