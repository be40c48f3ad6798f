"""Issue 26 kind 4: bad inputs of the newer commands give one line and exit 2 before any expensive work, never
a traceback."""
import numpy as np
import pytest
from PIL import Image

from weightscope.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.fixture
def files(tmp_path):
    np.save(tmp_path / "flat.npy", np.ones(5))
    np.save(tmp_path / "rect.npy", np.ones((10, 3)))
    nan = np.eye(10)
    nan[2, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    (tmp_path / "bad.png").write_text("not an image")
    (tmp_path / "one.txt").write_text("# one class only\ncat\n")
    for c in "ab":
        (tmp_path / "cls" / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(tmp_path / "cls" / c / f"{i}.png")
    (tmp_path / "cls" / "b" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return tmp_path


@pytest.mark.parametrize("argv, says", [
    (["depth", "--classes", "cifar10", "--similarity", "flat.npy"], "has shape (5,); it must be a square matrix"),
    (["depth", "--classes", "cifar10", "--similarity", "rect.npy"], "has shape (10, 3)"),
    (["depth", "--classes", "cifar10", "--similarity", "nan.npy"], "1 non-finite"),
    (["depth", "--classes", "cifar10", "--similarity", "text.npy"], "not numbers"),
    (["depth", "--classes", "cifar10", "--confusion", "flat.npy", "--similarity", "nan.npy"], "confusion matrix"),
    (["depth", "--classes", "one.txt", "--similarity", "rect.npy"], "lists 1 class(es)"),
    (["sing", "--image", "bad.png"], "cannot decode image"),
    (["similarity", "--concepts", "cifar10", "--image", "cls"], "zz.png"),
])
def test_bad_input_one_line(files, capsys, monkeypatch, argv, says):
    """The issue's input (a 1-D --similarity) and the other members: one line, exit 2, no model loaded."""
    import weightscope.bundled as bundled

    def no_model(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.chdir(files)
    monkeypatch.setattr(bundled, "load_model", no_model)
    code, err = _run(capsys, *argv, "--out", str(files / "out"), "--quiet")
    assert code == 2, err
    assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err
