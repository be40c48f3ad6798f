"""Real-world checkpoint files (issue 13 kinds 1-4, issue 12 kinds 2 and 8).

The reference in every loading test is the tiny model's own state dict (tensor-for-tensor equality, hence the
same singular values), or stock open_clip loading the same file; never weightscope's reader.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from weightscope import Edit, WeightscopeError, apply_edits, decompose_head, describe_model, load_model, save_checkpoint
from weightscope.models.checkpoints import sha256_file, sidecar_path

from conftest import TINY_CFG, make_model, register_config

REPO = Path(__file__).resolve().parents[1]
PY = [sys.executable]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _sd(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _assert_same(loaded, reference: dict):
    got = loaded.model.state_dict()
    assert got.keys() == reference.keys()
    for k, v in reference.items():
        assert torch.equal(got[k], v.to(got[k].dtype)), k


def _one_error_line(err: str, command: str, *needles: str) -> bool:
    lines = [l for l in err.splitlines() if l.startswith(f"weightscope {command}: error:")]
    return len(lines) == 1 and all(n in lines[0] for n in needles) and "Traceback" not in err


def _cli(argv, capsys):
    from weightscope.cli import main

    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


# --------------------------------------------------------------------------------- issue 13 kind 1: layouts


def _layouts(sd):
    """name -> object torch.save / save_file writes, each a layout open_clip (or a training wrapper) produces."""
    scalar = {**sd, "logit_scale": sd["logit_scale"].reshape(1)}
    return {
        "logit_scale_1d": scalar,
        "stale_position_ids": {**sd, "text.transformer.embeddings.position_ids": torch.arange(77)[None]},
        "stale_attn_mask": {**sd, "attn_mask": torch.zeros(77, 77)},  # a non-persistent buffer, saved by old code
        "nested_state_dict": {"state_dict": sd, "epoch": 3},
        "nested_model": {"model": sd},
        "nested_ema": {"ema": sd},
        "nested_model_state_dict": {"model": {"state_dict": sd}, "step": 10},
        "data_parallel": {f"module.{k}": v for k, v in sd.items()},
        "torch_compile": {f"_orig_mod.{k}": v for k, v in sd.items()},
        "compiled_data_parallel": {f"module._orig_mod.{k}": v for k, v in sd.items()},
        "compiled_vision_tower": {k.replace("visual.", "visual._orig_mod.", 1): v for k, v in sd.items()},
        "lightning_prefix": {"state_dict": {f"model.{k}": v for k, v in scalar.items()}, "global_step": 7},
        "double_prefix": {f"model.clip.{k}": v for k, v in sd.items()},
        "open_clip_training_run": {"epoch": 2, "name": "run", "state_dict": {f"module.{k}": v for k, v in sd.items()},
                                   "optimizer": {"state": {0: {"exp_avg": torch.zeros(3), "step": torch.tensor(5.)}},
                                                 "param_groups": [{"lr": 0.1, "params": [0]}]}},
    }


@pytest.mark.parametrize("layout", list(_layouts({"logit_scale": torch.zeros(())})))
def test_layouts_open_clip_loads_load(layout, tiny_name, tiny_model, tmp_path):
    sd = _sd(tiny_model)
    obj = _layouts(sd)[layout]
    path = tmp_path / f"{layout}.pt"
    torch.save(obj, path)
    _assert_same(load_model(tiny_name, checkpoint=path), sd)
    if set(obj) <= set(sd) | {"text.transformer.embeddings.position_ids"}:
        flat = tmp_path / f"{layout}.safetensors"  # the same flat layouts as safetensors
        save_file(obj, str(flat))
        _assert_same(load_model(tiny_name, checkpoint=flat), sd)


def test_layouts_logit_scale_same_singular_values_as_clean_file(tiny_name, tiny_model, tmp_path):
    """The issue's input: the (1,) logit_scale file gives the clean file's singular values."""
    sd = _sd(tiny_model)
    save_file(sd, str(tmp_path / "clean.safetensors"))
    torch.save(_layouts(sd)["logit_scale_1d"], tmp_path / "old.pt")
    clean = describe_model(load_model(tiny_name, checkpoint=tmp_path / "clean.safetensors"))
    old = describe_model(load_model(tiny_name, checkpoint=tmp_path / "old.pt"))
    for layer in range(clean.n_layers):
        assert np.array_equal(decompose_head(clean, layer, 1).s, decompose_head(old, layer, 1).s)


def test_layouts_several_weight_sets_say_which_is_used(tiny_name, tiny_model, tmp_path):
    sd = _sd(tiny_model)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"state_dict": sd, "state_dict_ema": ema}, tmp_path / "both.pt")
    with pytest.warns(UserWarning, match=r"several weight sets; using 'state_dict' \(not 'state_dict_ema'\)"):
        _assert_same(load_model(tiny_name, checkpoint=tmp_path / "both.pt"), sd)


def test_layouts_old_text_layout_into_custom_text_model(tmp_path):
    """CLIP-layout weights (text tower at top level) load into a CustomTextCLIP config, as open_clip converts."""
    plain = make_model(register_config(tmp_path, "ws-ck-plain", TINY_CFG))
    custom = register_config(tmp_path, "ws-ck-custom", {**TINY_CFG, "custom_text": True})
    save_file(_sd(plain), str(tmp_path / "plain.safetensors"))
    loaded = load_model(custom, checkpoint=tmp_path / "plain.safetensors")
    assert type(loaded.model).__name__ == "CustomTextCLIP"
    assert torch.equal(loaded.model.text.positional_embedding, plain.positional_embedding)
    assert torch.equal(loaded.model.visual.conv1.weight, plain.visual.conv1.weight)


def test_layouts_other_image_size_loads_at_the_saved_size(tiny_name, tmp_path):
    """A positional embedding for 48 px (6 x 6 patches) builds the model at 48 px, weights untouched, one line."""
    big = make_model(register_config(tmp_path, "ws-ck-48", {**TINY_CFG, "vision_cfg": {
        **TINY_CFG["vision_cfg"], "image_size": 48}}), seed=4)
    save_file(_sd(big), str(tmp_path / "48.safetensors"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(tiny_name, checkpoint=tmp_path / "48.safetensors")
    said = [str(w.message) for w in caught if "saved for other input sizes" in str(w.message)]
    assert len(said) == 1 and "image_size (48, 48)" in said[0] and "\n" not in said[0]
    _assert_same(loaded, _sd(big))
    assert tuple(loaded.model.visual.image_size) == (48, 48)
    from PIL import Image

    assert loaded.preprocess(Image.new("RGB", (100, 80))).shape == (3, 48, 48)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(loaded.model.encode_image(x), big.encode_image(x), atol=1e-6)


def test_layouts_other_context_length_loads_at_the_saved_length(tiny_name, tmp_path):
    short = make_model(register_config(tmp_path, "ws-ck-ctx", {**TINY_CFG, "text_cfg": {
        **TINY_CFG["text_cfg"], "context_length": 16}}), seed=5)
    save_file(_sd(short), str(tmp_path / "ctx.safetensors"))
    with pytest.warns(UserWarning, match=r"context_length 16"):
        loaded = load_model(tiny_name, checkpoint=tmp_path / "ctx.safetensors")
    _assert_same(loaded, _sd(short))
    tokens = loaded.tokenizer(["a red circle"])
    assert tokens.shape == (1, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.model.encode_text(tokens), short.encode_text(tokens), atol=1e-6)


def _script(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(path))


def test_layouts_torchscript_archives_load(tiny_name, tiny_model, tmp_path):
    """OpenAI's format: a TorchScript archive of the whole model, fp16, with its attention-mask buffer."""
    half = make_model(tiny_name).half()
    for key, value in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
        if not hasattr(half, key):  # OpenAI's archives keep these beside the weights
            half.register_buffer(key, torch.tensor(value))
    _script(half, tmp_path / "openai-style.pt")
    loaded = load_model(tiny_name, checkpoint=tmp_path / "openai-style.pt")
    _assert_same(loaded, {k: v.float() for k, v in _sd(half).items()
                          if k not in ("input_resolution", "context_length", "vocab_size")})
    assert describe_model(loaded).layers[0].activation == "gelu"


def test_layouts_torchscript_quickgelu_archive_builds_quickgelu(tiny_name, tmp_path):
    """OpenAI's archives hold QuickGELU models: the archive says so, and the model is built with QuickGELU."""
    qg = make_model(tiny_name, seed=2, force_quick_gelu=True)
    _script(qg, tmp_path / "qg.pt")
    with pytest.warns(UserWarning, match="TorchScript archive of a QuickGELU model"):
        loaded = load_model(tiny_name, checkpoint=tmp_path / "qg.pt")
    assert describe_model(loaded).layers[0].activation == "quick_gelu"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.model.encode_image(x), qg.encode_image(x), atol=1e-6)


@pytest.mark.parametrize("wrap", ["data_parallel", "torch_compile", "compiled_tower", "compiled_data_parallel"])
def test_layouts_saving_wrapped_models_writes_bare_keys(wrap, tiny_name, tmp_path):
    import copy

    import open_clip

    model = make_model(tiny_name, seed=6)
    reference = _sd(model)
    work = copy.deepcopy(model)
    if wrap == "data_parallel":
        obj = torch.nn.DataParallel(work)
    elif wrap == "torch_compile":
        obj = torch.compile(work)
    elif wrap == "compiled_tower":
        work.visual = torch.compile(work.visual)
        obj = work
    else:
        obj = torch.nn.DataParallel(torch.compile(work))
    path, _ = save_checkpoint(obj, tmp_path / f"{wrap}.safetensors")
    from safetensors.torch import load_file

    assert set(load_file(str(path))) == set(reference)
    stock = open_clip.create_model(tiny_name, pretrained=str(path))  # strict: fails on any extra prefix
    assert all(torch.equal(stock.state_dict()[k], v) for k, v in reference.items())
    assert isinstance(load_model(obj).model, type(model))  # the wrapper is looked through


# ----------------------------------------------------------------------- issue 13 kind 2: the right diagnosis


def test_right_diagnosis_namespace_in_checkpoint(tiny_name, tiny_model, tmp_path, capsys):
    sd = _sd(tiny_model)
    path = tmp_path / "train.pt"
    torch.save({"state_dict": sd, "args": argparse.Namespace(lr=1e-3, model=tiny_name)}, path)
    with pytest.raises(WeightscopeError) as err:
        load_model(tiny_name, checkpoint=path)
    msg = str(err.value)
    assert "safe loading (weights_only) refused a non-tensor object of type argparse.Namespace" in msg
    assert "trust_checkpoint=True" in msg and "--trust-checkpoint" in msg and "truncated" not in msg
    assert "\n" not in msg
    _assert_same(load_model(tiny_name, checkpoint=path, trust_checkpoint=True), sd)
    # the command line: one line, exit 2, and the flag opts in
    rc, _, err_text = _cli(["edit", tiny_name, "--checkpoint", path, "--direction", "0:0:0", "--dry-run"], capsys)
    assert rc == 2 and _one_error_line(err_text, "edit", "argparse.Namespace", "--trust-checkpoint")
    rc, out, _ = _cli(["edit", tiny_name, "--checkpoint", path, "--direction", "0:0:0", "--dry-run",
                       "--trust-checkpoint"], capsys)
    assert rc == 0 and "dry run" in out


def test_right_diagnosis_other_members(tiny_name, tiny_model, tmp_path):
    sd = _sd(tiny_model)
    # a whole pickled model: refused by name; trusted, its weights
    torch.save(tiny_model, tmp_path / "whole.pt")
    with pytest.raises(WeightscopeError, match=r"refused a non-tensor object of type open_clip\.model\.CLIP"):
        load_model(tiny_name, checkpoint=tmp_path / "whole.pt")
    _assert_same(load_model(tiny_name, checkpoint=tmp_path / "whole.pt", trust_checkpoint=True), sd)
    # a Lightning-style checkpoint: hyper-parameters object, "model." prefix
    torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()},
                "hyper_parameters": argparse.Namespace(width=64)}, tmp_path / "lightning.ckpt")
    with pytest.raises(WeightscopeError, match="type argparse.Namespace"):
        load_model(tiny_name, checkpoint=tmp_path / "lightning.ckpt")
    _assert_same(load_model(tiny_name, checkpoint=tmp_path / "lightning.ckpt", trust_checkpoint=True), sd)
    # a numpy array among the tensors
    torch.save({"state_dict": sd, "mean": np.zeros(3)}, tmp_path / "np.pt")
    with pytest.raises(WeightscopeError, match=r"refused a non-tensor object of type numpy\..*trust_checkpoint"):
        load_model(tiny_name, checkpoint=tmp_path / "np.pt")
    # the format comes from the bytes, not the suffix: these are complete, readable files
    save_file(sd, str(tmp_path / "really-safetensors.bin"))
    _assert_same(load_model(tiny_name, checkpoint=tmp_path / "really-safetensors.bin"), sd)
    torch.save(sd, tmp_path / "really-torch.safetensors")
    _assert_same(load_model(tiny_name, checkpoint=tmp_path / "really-torch.safetensors"), sd)
    # empty file, folder, no state dict at all
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(WeightscopeError, match="is an empty file"):
        load_model(tiny_name, checkpoint=tmp_path / "empty.pt")
    with pytest.raises(WeightscopeError, match="is a folder, not a file.*local-dir:"):
        load_model(tiny_name, checkpoint=tmp_path)
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "nothing.pt")
    with pytest.raises(WeightscopeError, match="holds no state dict of tensors .found: epoch, lr"):
        load_model(tiny_name, checkpoint=tmp_path / "nothing.pt")
    (tmp_path / "text.pt").write_text("hello, not a checkpoint")
    with pytest.raises(WeightscopeError, match="neither a safetensors nor a torch file"):
        load_model(tiny_name, checkpoint=tmp_path / "text.pt")


# ------------------------------------------------------------------ issue 13 kind 3: hub and folders, one line


def test_environment_failures_local_dir(tiny_name, tmp_path, capsys):
    empty = tmp_path / "no-config"
    empty.mkdir()
    with pytest.raises(WeightscopeError, match=rf"cannot load local-dir:{empty}: folder {empty} has no "
                                               r"open_clip_config\.json"):
        load_model(f"local-dir:{empty}")
    with pytest.raises(WeightscopeError, match="folder .*missing not found"):
        load_model(f"local-dir:{tmp_path / 'missing'}")
    bad = tmp_path / "bad-config"
    bad.mkdir()
    (bad / "open_clip_config.json").write_text(json.dumps({"preprocess_cfg": {}}))
    with pytest.raises(WeightscopeError, match="has no 'model_cfg' entry"):
        load_model(f"local-dir:{bad}")
    # a config without weights: open_clip only logs; the model is reported as random
    noweights = tmp_path / "no-weights"
    noweights.mkdir()
    (noweights / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG}))
    with pytest.warns(UserWarning, match="holds no weights file"):
        assert load_model(f"local-dir:{noweights}").source == "random-init"
    rc, _, err = _cli(["edit", f"local-dir:{empty}", "--direction", "0:0:0", "--dry-run"], capsys)
    assert rc == 2 and _one_error_line(err, "edit", str(empty), "open_clip_config.json")
    # a folder given as the model name
    with pytest.raises(WeightscopeError, match=rf"is a folder: write local-dir:{tmp_path}"):
        load_model(str(tmp_path))


def test_environment_failures_hf_hub_offline_without_cache(tmp_path):
    """Offline with an empty cache: a hf-hub: name and a pretrained tag each give one line, exit 2."""
    env = {**ENV, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path / "c")}
    runs = [["inspect", "hf-hub:nobody/no-such-clip", "--out", str(tmp_path / "o")],
            ["edit", "ViT-B-32", "--pretrained", "openai", "--direction", "0:0:0", "--dry-run"]]
    code = ("import sys; from weightscope.cli import main\n"
            f"for argv in {runs!r}:\n"
            "    rc = main(argv); print('rc', rc, file=sys.stderr)\n")
    run = subprocess.run([*PY, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    blocks = run.stderr.split("rc 2\n")
    assert len(blocks) == 3 and blocks[2] == ""  # both commands exit 2
    assert _one_error_line(blocks[0], "inspect", "hf-hub:nobody/no-such-clip", "no cached copy", "HF_HUB_OFFLINE")
    assert _one_error_line(blocks[1], "edit", "could not fetch ViT-B-32/openai", "no cached copy", "HF_HUB_OFFLINE")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------- issue 13 kind 4: the edit loop closes


@pytest.fixture(scope="module")
def edited_bundled(tmp_path_factory):
    """An edited bundled checkpoint written by the Python route, and the edited model's head (5, 0) spectrum."""
    loaded = load_model()
    edited = apply_edits(loaded, [Edit(5, 0, 0, 0.0), Edit(4, 1, 2, 2.0)])
    path, _ = save_checkpoint(edited, tmp_path_factory.mktemp("loop") / "edited.safetensors")
    s = decompose_head(describe_model(edited), 5, 0).s
    return path, s, _sd(edited.model)


def test_edit_loop_closes_in_python(edited_bundled):
    path, s, sd = edited_bundled
    for loaded in (load_model("shapes-vit", checkpoint=path), load_model("bundled", checkpoint=path),
                   load_model(str(path)), load_model(checkpoint=path)):
        _assert_same(loaded, sd)
        assert loaded.name == "shapes-vit" and loaded.source == str(path)
    assert load_model("shapes-vit", pretrained="tuned").source == "bundled:tuned"  # the architecture name's tags


def test_edit_loop_closes_in_a_fresh_process(edited_bundled):
    path, s, _ = edited_bundled
    code = ("import sys, numpy as np; from weightscope import load_model, describe_model, decompose_head; "
            "print(repr([decompose_head(describe_model(load_model(*a)), 5, 0).s.tolist() for a in "
            f"[('shapes-vit', None, {str(path)!r}), ({str(path)!r},)]]))")
    run = subprocess.run([*PY, "-c", code], env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    for got in eval(run.stdout.strip().splitlines()[-1]):
        assert np.array_equal(np.array(got), s)


def test_edit_loop_closes_on_the_command_line(edited_bundled, tmp_path, capsys):
    path, s, _ = edited_bundled
    spectra = []
    for i, model in enumerate((["shapes-vit", "--checkpoint", path], ["bundled", "--checkpoint", path], [path])):
        out = tmp_path / f"ins{i}"
        rc, text, err = _cli(["inspect", *model, "--layers", "5", "--heads", "0", "--vocab", "shapes_world",
                              "--out", out], capsys)
        assert rc == 0, err
        spectra.append(json.loads((out / "inspection.json").read_text()))
    first = spectra[0]
    assert all(sp["heads"] == first["heads"] for sp in spectra[1:])
    # re-edit the edited file by path; its sidecar chains to the first
    again = tmp_path / "again.safetensors"
    rc, text, err = _cli(["edit", path, "--direction", "5:0:1", "--out", again], capsys)
    assert rc == 0, err
    meta = json.loads(sidecar_path(again).read_text())
    assert meta["architecture"]["name"] == "shapes-vit" and meta["source"]["checkpoint"] == str(path)
    assert meta["source"]["checkpoint_sha256"] == sha256_file(path)
    assert meta["source"]["sidecar"] == json.loads(sidecar_path(path).read_text())
    # compare takes the file as base or as tuned, architecture from the sidecar
    for argv in (["compare", "bundled", path], ["compare", path, "bundled", again]):
        rc, text, err = _cli([*argv, "--quiet"], capsys)
        assert rc == 0, err
    # editing the file in place is refused even with --overwrite: it is the run's input
    digest = sha256_file(path)
    rc, _, err = _cli(["edit", path, "--direction", "5:0:1", "--out", path, "--overwrite"], capsys)
    assert rc == 2 and "input checkpoint" in err and sha256_file(path) == digest


def test_edit_loop_shipped_and_trained_checkpoints_load_by_path(tmp_path):
    """The other writers: the shipped files (no sidecar: known by place) and the shapes trainer (writes one)."""
    from safetensors.torch import load_file

    from weightscope.shapes import bundled, train

    shipped = load_model(str(bundled.checkpoint_path("tuned")))
    _assert_same(shipped, {k: v.float() for k, v in load_file(str(bundled.checkpoint_path("tuned"))).items()})
    out = tmp_path / "trained.safetensors"
    train.train(out, {"seed": 2, "steps": 1, "batch_size": 4, "contrast": {}}, save_every=10)
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["architecture"] == {"name": "shapes-vit", "options": {}} and meta["training"]["steps"] == 1
    assert meta["checkpoint_sha256"] == sha256_file(out) and meta["source"]["source"] == "random-init"
    trained = load_model(str(out))
    _assert_same(trained, {k: v.float() for k, v in load_file(str(out)).items()})
    tuned = tmp_path / "tuned.safetensors"
    train.train(tuned, {"seed": 3, "steps": 1, "batch_size": 4, "contrast": {}}, save_every=10, init=out)
    meta = json.loads(sidecar_path(tuned).read_text())
    assert meta["source"]["checkpoint"] == str(out) and meta["source"]["sidecar"]["training"]["seed"] == 2


def test_edit_loop_a_file_without_sidecar_needs_a_name(tiny_name, tiny_model, tmp_path, capsys):
    save_file(_sd(tiny_model), str(tmp_path / "plain.safetensors"))
    (tmp_path / "broken.safetensors").write_bytes((tmp_path / "plain.safetensors").read_bytes())
    sidecar_path(tmp_path / "broken.safetensors").write_text("{not json")
    with pytest.raises(WeightscopeError, match=r"cannot read the sidecar .*broken\.safetensors\.json"):
        load_model(str(tmp_path / "broken.safetensors"))
    with pytest.warns(UserWarning, match="cannot read the sidecar"):  # with a name the sidecar is not needed
        _assert_same(load_model(tiny_name, checkpoint=tmp_path / "broken.safetensors"), _sd(tiny_model))
    with pytest.raises(WeightscopeError,
                       match=r"no weightscope sidecar \(plain\.safetensors\.json\).*NAME --checkpoint"):
        load_model(str(tmp_path / "plain.safetensors"))
    rc, _, err = _cli(["edit", tmp_path / "plain.safetensors", "--direction", "0:0:0", "--dry-run"], capsys)
    assert rc == 2 and _one_error_line(err, "edit", "no weightscope sidecar")


def test_edit_loop_readme_edit_lines_run_one_after_the_other(tmp_path, capsys, monkeypatch):
    """The README's quick-start `edit` lines, as written (comments dropped), one after the other, after an inspect
    that writes their input; the command reference's lines (with [optional] parts) are their longer forms."""
    import re
    import shlex

    lines = [l.split("weightscope ", 1)[1] for l in (REPO / "README.md").read_text().splitlines()
             if re.match(r"^weightscope edit\s", l) and "[" not in l]
    assert len(lines) == 2
    monkeypatch.chdir(tmp_path)
    rc, _, err = _cli(["inspect", "--layers", "4", "--vocab", "shapes_world"], capsys)
    assert rc == 0, err
    for line in lines:
        argv = shlex.split(line, comments=True)
        rc, text, err = _cli(argv, capsys)
        assert rc == 0, (line, err)
        out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else Path("weightscope-out/edit/edited.safetensors")
        assert out.is_file() and sidecar_path(out).is_file()


# ----------------------------------------------------------------------- issue 12 kind 2: QuickGELU weights


@pytest.fixture(scope="module")
def vit_b32_file(tmp_path_factory):
    """A random-init ViT-B-32 state dict as a local file (fp16, to keep it small)."""
    model = make_model("ViT-B-32", seed=1)
    path = tmp_path_factory.mktemp("b32") / "b32.safetensors"
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _offline_tag(monkeypatch, name, tag, path, **cfg):
    """Point open_clip's pretrained tag at a local file (open_clip's download returns cfg['file'] as is)."""
    from open_clip import pretrained

    tags = pretrained._PRETRAINED.setdefault(name, {})
    monkeypatch.setitem(pretrained._PRETRAINED, name, {**tags, tag: {**tags.get(tag, {}), **cfg, "file": str(path)}})


def _activations(module) -> set[str]:
    from open_clip.transformer import QuickGELU

    return {"quick_gelu" if isinstance(m, QuickGELU) else "gelu" for m in module.modules()
            if isinstance(m, (QuickGELU, torch.nn.GELU))}


def test_quickgelu_openai_vit_b32_builds_quickgelu(vit_b32_file, monkeypatch):
    """The issue's input: load_model("ViT-B-32", pretrained="openai"), the tag's file a local one."""
    from safetensors.torch import load_file

    _offline_tag(monkeypatch, "ViT-B-32", "openai", vit_b32_file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model("ViT-B-32", pretrained="openai")
    said = [str(w.message) for w in caught if "QuickGELU" in str(w.message)]
    assert len(said) == 1 and "trained with QuickGELU" in said[0] and "\n" not in said[0]
    assert not [w for w in caught if "mismatch" in str(w.message)]  # open_clip has nothing left to warn about
    assert _activations(loaded.model) == {"quick_gelu"}
    assert describe_model(loaded).layers[0].activation == "quick_gelu"
    file = load_file(str(vit_b32_file))
    assert all(torch.equal(loaded.model.state_dict()[k], v.float()) for k, v in file.items())


def test_quickgelu_every_tag_trained_with_it(monkeypatch):
    """Every open_clip tag marked quick_gelu on a config without it is built with force_quick_gelu, and only
    those (the builder is stubbed: the decision, not the download, is under test)."""
    import open_clip
    from open_clip import pretrained

    seen = {}

    def fake_create(name, pretrained=None, **kwargs):
        seen[(name, pretrained)] = kwargs
        raise OSError("stub")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    # the download is not under test: without this, no network here makes load_model fail before the builder
    monkeypatch.setattr("weightscope.models.load._check_fetchable", lambda name, tag: None)
    expected = {}
    for name, tag in open_clip.list_pretrained():
        cfg = open_clip.get_model_config(name)
        if cfg is None:
            continue
        expected[(name, tag)] = bool(pretrained._PRETRAINED[name][tag].get("quick_gelu")) and not cfg.get("quick_gelu")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(WeightscopeError, match="could not fetch"):
                load_model(name, pretrained=tag)
        assert bool([w for w in caught if "QuickGELU" in str(w.message)]) == expected[(name, tag)], (name, tag)
    assert sum(expected.values()) >= 20  # OpenAI, LAION-400M, MetaCLIP ... tags of many architectures
    assert {k: bool(v.get("force_quick_gelu")) for k, v in seen.items()} == expected


def test_quickgelu_other_tags_keep_gelu_and_saved_copies_keep_quickgelu(tiny_name, tmp_path, monkeypatch):
    """A tag trained with GELU keeps GELU; a copy weightscope saves of QuickGELU weights loads with QuickGELU."""
    file = tmp_path / "tiny.safetensors"
    save_file(_sd(make_model(tiny_name, seed=8)), str(file))
    _offline_tag(monkeypatch, tiny_name, "qg", file, quick_gelu=True)
    _offline_tag(monkeypatch, tiny_name, "plain", file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _activations(load_model(tiny_name, pretrained="plain").model) == {"gelu"}
    assert not [w for w in caught if "QuickGELU" in str(w.message)]
    with pytest.warns(UserWarning, match="trained with QuickGELU"):
        qg = load_model(tiny_name, pretrained="qg")
    assert _activations(qg.model) == {"quick_gelu"}
    path, side = save_checkpoint(apply_edits(qg, [Edit(0, 0, 0, 0.0)]), tmp_path / "copy.safetensors")
    import open_clip

    recorded = json.loads(side.read_text())["architecture"]
    assert recorded == {"name": tiny_name, "options": {"force_quick_gelu": True},
                        "config": open_clip.get_model_config(tiny_name)}     # the config: loads by path anywhere
    for again in (load_model(str(path)), load_model(tiny_name, checkpoint=path)):
        assert _activations(again.model) == {"quick_gelu"}


# --------------------------------------------------------------------- issue 12 kind 8: one sidecar, any route


def test_one_sidecar_whichever_route_wrote_it(tiny_name, tmp_path, capsys):
    src = tmp_path / "src.safetensors"
    save_file(_sd(make_model(tiny_name, seed=9)), str(src))
    edits = [Edit(1, 2, 3, 0.5), Edit(0, 0, 0, 0.0)]
    py_path, py_side = save_checkpoint(apply_edits(load_model(tiny_name, checkpoint=src), edits),
                                       tmp_path / "py.safetensors")
    cli_path = tmp_path / "cli.safetensors"
    rc, _, err = _cli(["edit", tiny_name, "--checkpoint", src, "--direction", "1:2:3=0.5", "--direction", "0:0:0",
                       "--out", cli_path], capsys)
    assert rc == 0, err
    py, cli = json.loads(py_side.read_text()), json.loads(sidecar_path(cli_path).read_text())
    assert py.keys() == cli.keys()
    for key in ("producer", "architecture", "source", "basis"):
        assert py[key] == cli[key], key
    assert [{**e, "reason": ""} for e in py["edits"]] == [{**e, "reason": ""} for e in cli["edits"]]
    assert py["source"] == {"model": tiny_name, "source": str(src), "checkpoint": str(src),
                            "checkpoint_sha256": sha256_file(src)}
    assert {k: py["architecture"][k] for k in ("name", "options")} == {"name": tiny_name, "options": {}}
    assert [(e["layer"], e["head"], e["index"], e["alpha"]) for e in py["edits"]] == [(1, 2, 3, 0.5), (0, 0, 0, 0.0)]
    assert py["selection"] == {} and cli["selection"]["mode"] == "direction"
    assert py["checkpoint_sha256"] == sha256_file(py_path) and cli["checkpoint_sha256"] == sha256_file(cli_path)
    # same weights either way
    from safetensors.torch import load_file

    a, b = load_file(str(py_path)), load_file(str(cli_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_one_sidecar_other_routes(tiny_name, tmp_path):
    from weightscope.shapes import bundled

    # the bundled model: the shipped file and its hash, as the CLI records them
    _, side = save_checkpoint(apply_edits(load_model(), [Edit(5, 0, 0, 0.0)]), tmp_path / "b.safetensors")
    meta = json.loads(side.read_text())
    base = bundled.checkpoint_path("base")
    assert meta["source"] == {"model": "shapes-vit", "source": "bundled:base", "checkpoint": str(base),
                              "checkpoint_sha256": sha256_file(base)}
    # an unedited model saved as is: architecture and source, no edits
    _, side = save_checkpoint(load_model(tiny_name), tmp_path / "plain.safetensors")
    meta = json.loads(side.read_text())
    assert meta["architecture"]["name"] == tiny_name and meta["edits"] == []
    assert meta["source"]["source"] == "random-init"
    # two edits in memory: the second record nests the first, so both rounds' bases are known
    once = apply_edits(load_model(), [Edit(5, 0, 0, 0.0)])
    twice = apply_edits(once, [Edit(5, 0, 1, 0.0)])
    _, side = save_checkpoint(twice, tmp_path / "twice.safetensors")
    meta = json.loads(side.read_text())
    assert [e["index"] for e in meta["edits"]] == [1]
    assert meta["source"]["source"] == "bundled:base+edited"
    assert [e["index"] for e in meta["source"]["provenance"]["edits"]] == [0]
    assert meta["source"]["provenance"]["source"]["checkpoint"] == str(base)
