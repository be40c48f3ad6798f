"""Issue 26 kind 8: CLI messages use CLI spellings, third-party log lines stay out of them, and a download that
cannot happen fails at once, before the model is built."""
import logging

import pytest

from weightscope.cli import cli_spelling, main


def _run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


@pytest.fixture
def no_build(monkeypatch):
    import open_clip

    def refuse(*a, **k):
        raise AssertionError("the model was built before the download was known to be impossible")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", refuse)


def test_cli_messages_mislead_offline(monkeypatch, capsys, no_build, tmp_path):
    """The issue's input: an offline download. One line, CLI spelling, no log lines, the model never built."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    logging.getLogger().warning("a third-party line")      # logging works outside the command ...
    code, err = _run(capsys, "inspect", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k", "--out", str(tmp_path))
    assert code == 2
    assert err.splitlines() == [err] and "HF_HUB_OFFLINE" in err
    assert "--checkpoint PATH" in err and "checkpoint=" not in err


def test_cli_messages_mislead_no_network(monkeypatch, capsys, no_build, tmp_path):
    """The hub's host unreachable (and nothing cached): the same, at once."""
    from weightscope.models import load

    monkeypatch.setattr(load, "_reachable", lambda host, timeout=3.0: False)
    monkeypatch.setattr(load, "_cached_weights", lambda cfg: False)
    code, err = _run(capsys, "inspect", "ViT-B-32", "--pretrained", "openai", "--out", str(tmp_path))
    assert code == 2 and err.splitlines() == [err]
    assert "cannot be reached" in err and "--checkpoint PATH" in err and "checkpoint=" not in err


def test_cli_messages_mislead_spellings(capsys, tmp_path, tiny_name):
    """Other members: a checkpoint without a sidecar, and the library's Python spellings in general."""
    import open_clip
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in open_clip.create_model(tiny_name).state_dict().items()}
    save_file(sd, str(tmp_path / "bare.safetensors"))
    code, err = _run(capsys, "inspect", str(tmp_path / "bare.safetensors"), "--out",
                     str(tmp_path / "o"))
    assert code == 2 and "NAME --checkpoint" in err and "load_model(" not in err and "=PATH" not in err
    assert cli_spelling("x exists; choose another path or pass overwrite=True") == \
        "x exists; choose another path or pass --overwrite"
    assert cli_spelling("if you trust the file, pass trust_checkpoint=True (CLI: --trust-checkpoint); x") == \
        "if you trust the file, pass --trust-checkpoint; x"
    assert logging.getLogger().level == logging.WARNING or logging.getLogger().level < logging.CRITICAL
