"""Issue 26 kind 6: text files from common editors (UTF-8 with a byte-order mark, CRLF line ends, UTF-16 with a
mark) read exactly as the plain UTF-8 file, by the one reader every text input uses."""
import numpy as np
import pytest

from weightscope.core.errors import WeightscopeError
from weightscope.core.fileio import read_lines

CLASSES = ["airplane", "automobile", "bird", "cat", "deer"]
SAVES = {  # how editors save the same lines
    "plain": lambda s: s.encode("utf-8"),
    "utf8-bom": lambda s: b"\xef\xbb\xbf" + s.replace("\n", "\r\n").encode("utf-8"),   # Notepad, Excel CSV UTF-8
    "utf16-bom": lambda s: s.replace("\n", "\r\n").encode("utf-16"),                      # Notepad "Unicode"
    "utf16be-bom": lambda s: b"\xfe\xff" + s.encode("utf-16-be"),
    "old-mac-cr": lambda s: s.replace("\n", "\r").encode("utf-8"),
}


def _write(tmp_path, name, lines, how):
    p = tmp_path / f"{how}-{name}"
    p.write_bytes(SAVES[how]("\n".join(lines) + "\n"))
    return p


@pytest.mark.parametrize("how", sorted(SAVES))
def test_text_files_from_editors_depth_classes(tmp_path, how):
    """The issue's input: a depth class file saved with a UTF-8 BOM; the classes are the plain names."""
    from weightscope.analyses.depth.inputs import read_classes

    names, specs = read_classes(str(_write(tmp_path, "classes.txt", ["# CIFAR", *CLASSES, ""], how)))
    assert names == CLASSES and specs == CLASSES


@pytest.mark.parametrize("how", sorted(SAVES))
def test_text_files_from_editors_every_reader(tmp_path, how):
    from weightscope.analyses.depth.inputs import read_matrix
    from weightscope.analyses.harness import read_manifest
    from weightscope.analyses.sing.analysis import parse_classes
    from weightscope.analyses.sing.inputs import read_texts
    from weightscope.concepts.vocab import load_vocabulary
    from weightscope.concepts.wordnet import read_overrides

    assert parse_classes(str(_write(tmp_path, "c.txt", CLASSES, how)))[0] == CLASSES
    assert read_texts(_write(tmp_path, "t.txt", ["a red  object", "# note", "a blue object"], how)) == \
        ["a red object", "a blue object"]
    assert load_vocabulary(str(_write(tmp_path, "v.txt", ["red", "blue", "green"], how))) == ["red", "blue", "green"]
    assert read_overrides(_write(tmp_path, "o.tsv", ["crane\tcrane.n.04", "seal\tn02076196"], how)) == \
        {"crane": "crane.n.04", "seal": "n02076196"}
    (tmp_path / "a.pt").write_bytes(b"x")
    assert read_manifest(_write(tmp_path, "m.csv", ["label,checkpoint", "first,a.pt"], how)) == \
        [("first", str(tmp_path / "a.pt"))]
    # a BOM before the first number would otherwise make the whole first column look like labels
    M = read_matrix(_write(tmp_path, "s.csv", ["1.0,0.5", "0.5,1.0"], how), "--similarity")
    np.testing.assert_array_equal(M, [[1.0, 0.5], [0.5, 1.0]])


def test_text_files_from_editors_refusals(tmp_path):
    """A legacy code page and UTF-16 without a mark are refused in one line saying to save as UTF-8."""
    (tmp_path / "cp1252.txt").write_bytes("café\nthé\n".encode("cp1252"))
    (tmp_path / "u16.txt").write_bytes("cat\ndog\n".encode("utf-16-le"))
    for name in ("cp1252.txt", "u16.txt"):
        with pytest.raises(WeightscopeError, match="save it as UTF-8") as err:
            read_lines(tmp_path / name, "class file")
        assert name in str(err.value) and "\n" not in str(err.value)
