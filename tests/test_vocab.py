"""Vocabulary files, loading and validation rules, combination."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from weightscope.concepts import vocab
from weightscope.core.errors import WeightscopeError

BUILTINS = ["general", "imagenet", "cifar10", "cifar100", "colors", "shapes_positions", "textures_materials"]


def test_builtins_are_listed():
    assert set(BUILTINS) <= set(vocab.list_vocabularies())


@pytest.mark.parametrize("name", BUILTINS)
def test_shipped_files_are_clean(name):
    """No blank lines, no surrounding whitespace, no case-insensitive duplicates: they load with
    no warning and unchanged."""
    lines = vocab.vocabulary_path(name).read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and all(lines[:-1])                    # one trailing newline only
    lines = lines[:-1]
    assert all(line == " ".join(line.split()) for line in lines)
    assert len({line.casefold() for line in lines}) == len(lines)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert vocab.load_vocabulary(name) == lines


def test_general_vocabulary_size_and_content():
    general = vocab.load_vocabulary("general")
    assert len(general) >= 20_000
    keys = {c.casefold() for c in general}
    # the domain lists and dataset class names are all inside it
    for name in ("imagenet", "cifar100", "colors", "textures_materials", "shapes_positions"):
        missing = [c for c in vocab.load_vocabulary(name) if c.casefold() not in keys]
        assert not missing, (name, missing[:5])
    for word in ("dog", "steel", "red", "circle", "running", "beach", "smiling face", "7", "logo"):
        assert word in keys
    # a few blocklisted words and pure function words never appear
    for bad in ("fuck", "shit", "whore", "the", "and", "of"):
        assert bad not in keys
    assert max(len(c) for c in general) <= 60
    # frequency order: the most common concepts come first
    assert general.index("dog") < 2000 < general.index("chinchilla")


def test_dataset_lists_in_class_order():
    imagenet = vocab.load_vocabulary("imagenet")
    assert len(imagenet) == 1000 and imagenet[0] == "tench" and imagenet[-1] == "toilet paper"
    assert imagenet[744] == "projectile" and imagenet[836] == "sunglass"      # disambiguated duplicates
    assert vocab.load_vocabulary("cifar10")[:3] == ["airplane", "automobile", "bird"]
    cifar100 = vocab.load_vocabulary("cifar100")
    assert len(cifar100) == 100 and cifar100[1] == "aquarium fish" and cifar100[-1] == "worm"


def test_load_from_file_and_list(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("  steel \n\nsnowy   mountains\n\n\ta red circle\n", encoding="utf-8")
    assert vocab.load_vocabulary(path) == ["steel", "snowy mountains", "a red circle"]
    assert vocab.load_vocabulary(str(path)) == ["steel", "snowy mountains", "a red circle"]
    assert vocab.load_vocabulary(("a", "b")) == ["a", "b"]
    assert vocab.load_vocabulary(np.array(["a", "b"])) == ["a", "b"]
    assert vocab.load_vocabulary(x for x in ["a", "b"]) == ["a", "b"]


def test_duplicates_dropped_with_warning_keeping_first():
    with pytest.warns(UserWarning, match=r"dropped 2 duplicate.*entry 2 'Steel' \(= entry 0\)"):
        out = vocab.load_vocabulary(["steel", "glass", "Steel", "glass  "])
    assert out == ["steel", "glass"]


def test_duplicates_error_mode():
    with pytest.raises(WeightscopeError, match=r"entry 2 'STEEL' duplicates entry 0"):
        vocab.load_vocabulary(["steel", "glass", "STEEL"], duplicates="error")
    with pytest.raises(WeightscopeError, match="duplicates="):
        vocab.load_vocabulary(["a"], duplicates="ignore")


@pytest.mark.parametrize("bad,pattern", [
    ([], "empty"),
    (["cat", None], r"entry 1 is NoneType"),
    (["cat", 3.5], r"entry 1 is float"),
    (["cat", b"dog"], r"entry 1 is bytes"),
    (["cat", "   "], r"entry 1 is an empty string"),
    (["cat", ""], r"entry 1 is an empty string"),
    (b"cat", "bytes"),
    (42, "not int"),
    ("no-such-vocabulary", "neither a built-in name"),
    ("/no/such/file.txt", "neither a built-in name"),
])
def test_bad_input_gives_clear_errors(bad, pattern):
    with pytest.raises(WeightscopeError, match=pattern):
        vocab.load_vocabulary(bad)


def test_bad_files(tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(WeightscopeError, match="blank.txt is empty"):
        vocab.load_vocabulary(blank)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\x00\xffbad")  # (b"\xff\xfe..." is a UTF-16 byte-order mark: read as UTF-16 text)
    with pytest.raises(WeightscopeError, match="not UTF-8"):
        vocab.load_vocabulary(binary)
    with pytest.raises(WeightscopeError, match="not a file"):
        vocab.load_vocabulary(tmp_path)
    with pytest.raises(WeightscopeError, match="unknown built-in"):
        vocab.vocabulary_path("nope")


def test_installed_vocab_folder_wins(tmp_path, monkeypatch):
    pkg = tmp_path / "weightscope"
    (pkg / "_vocab").mkdir(parents=True)
    (pkg / "_vocab" / "installed.txt").write_text("a\n")
    (tmp_path / "concepts").mkdir()
    (tmp_path / "concepts" / "checkout.txt").write_text("b\n")
    monkeypatch.setattr(vocab, "__file__", str(pkg / "concepts" / "vocab.py"))
    assert vocab.list_vocabularies() == ["installed"]
    (pkg / "_vocab" / "installed.txt").unlink()
    assert vocab.list_vocabularies() == ["checkout"]          # source checkout fallback
    (tmp_path / "concepts" / "checkout.txt").unlink()
    with pytest.raises(WeightscopeError, match="not found"):
        vocab.list_vocabularies()


def test_combine_first_n_and_seeded():
    shapes = vocab.load_vocabulary("shapes_positions")
    general = vocab.load_vocabulary("general")
    combined = vocab.combine_vocabularies("shapes_positions", "general", limits=[None, 5000])
    assert combined[: len(shapes)] == shapes
    extra = combined[len(shapes):]
    assert len(extra) == 5000
    shape_keys = {s.casefold() for s in shapes}
    assert not any(e.casefold() in shape_keys for e in extra)
    assert extra == [g for g in general if g.casefold() not in shape_keys][:5000]
    assert len({c.casefold() for c in combined}) == len(combined)

    a = vocab.combine_vocabularies("shapes_positions", "general", limits=[None, 300], seed=7)
    b = vocab.combine_vocabularies("shapes_positions", "general", limits=[None, 300], seed=7)
    c = vocab.combine_vocabularies("shapes_positions", "general", limits=[None, 300], seed=8)
    assert a == b and a != c and len(a) == len(shapes) + 300
    sampled = a[len(shapes):]
    positions = [general.index(s) for s in sampled]
    assert positions == sorted(positions)                     # kept in source order
    assert max(positions) > 5000                              # drawn from the whole list, not its head


def test_combine_validation():
    with pytest.raises(WeightscopeError, match="at least one"):
        vocab.combine_vocabularies()
    with pytest.raises(WeightscopeError, match="one per vocabulary"):
        vocab.combine_vocabularies(["a"], ["b"], limits=[1])
    with pytest.raises(WeightscopeError, match=re.escape("limits[1]")):
        vocab.combine_vocabularies(["a"], ["b"], limits=[None, -1])
    with pytest.raises(WeightscopeError, match="empty"):
        vocab.combine_vocabularies(["a"], limits=[0])
    assert vocab.combine_vocabularies(["a", "b"], ["B", "c"]) == ["a", "b", "c"]


# --------------------------------------------- issue 13 kind 6: entries the tokenizer cannot tell apart

def test_tokenizer_twins_kind6_bom_is_not_text(tmp_path):
    """The issue's input: a file saved with a UTF-8 byte-order mark keeps it out of the first label."""
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffsteel\nglass\n".encode("utf-8"))
    assert vocab.load_vocabulary(path) == ["steel", "glass"]
    assert vocab.load_vocabulary(["\ufeffsteel", "glass"]) == ["steel", "glass"]   # a BOM inside a list too


TWINS = [
    ("caf\u00e9", "cafe\u0301"),          # NFC vs NFD (the normalisation member)
    ("R&amp;B", "R&B"),                   # HTML-escaped vs not (the escaping member)
    ("\uff52\uff45\uff44", "red"),        # full-width letters
    ("\ufb01sh", "fish"),                 # a ligature
    ("Steel", "steel  "),                 # case and whitespace
]


def test_tokenizer_twins_kind6_duplicates_are_what_tokenises_identically():
    """Checked against open_clip's own tokenizer: each pair gives identical token ids, and is dropped with a
    count; entries that tokenise differently are all kept."""
    import open_clip

    tok = open_clip.get_tokenizer("ViT-B-32")
    for a, b in TWINS:
        assert tok([a]).tolist() == tok([b]).tolist(), (a, b)           # the reference: same tokens
    entries = [a for a, _ in TWINS] + [b for _, b in TWINS] + ["caf", "R B", "reds", "fist"]
    with pytest.warns(UserWarning, match=r"dropped 5 duplicate concept\(s\) \(they tokenise identically"):
        out = vocab.load_vocabulary(entries)
    assert out == [unicodedata_nfc(a) for a, _ in TWINS] + ["caf", "R B", "reds", "fist"]
    ids = [tuple(t) for t in tok(out).tolist()]
    assert len(set(ids)) == len(out)                                    # what is kept is distinguishable
    with pytest.raises(WeightscopeError, match="duplicates entry 0"):
        vocab.load_vocabulary(["cafe\u0301", "caf\u00e9"], duplicates="error")


def unicodedata_nfc(text: str) -> str:
    import unicodedata

    return " ".join(unicodedata.normalize("NFC", text).split())


def test_tokenizer_twins_kind6_stored_text_is_nfc_and_tokenises_as_given():
    import open_clip

    tok = open_clip.get_tokenizer("ViT-B-32")
    (out,) = vocab.load_vocabulary(["cafe\u0301 au lait"])
    assert out == "caf\u00e9 au lait" and tok([out]).tolist() == tok(["cafe\u0301 au lait"]).tolist()


def test_tokenizer_twins_kind6_vocabulary_path_with_commas(tmp_path, monkeypatch):
    """A vocabulary file whose path contains commas is one source, with or without a limit, beside others."""
    folder = tmp_path / "lists, v2"
    folder.mkdir()
    path = folder / "shapes,colours.txt"
    path.write_text("red\nblue\ncircle\n")
    assert vocab.split_vocabulary_spec(str(path)) == [(str(path), None)]
    assert vocab.split_vocabulary_spec(f"colors,{path}:2") == [("colors", None), (str(path), 2)]
    concepts, _ = vocab.parse_vocabulary_spec(f"{path}:2,colors")
    assert concepts[:2] == ["red", "blue"] and "circle" not in concepts[:2] and len(concepts) > 2
    assert vocab.vocabulary_files(f"colors,{path}") == [path]
    monkeypatch.chdir(folder)                                          # relative paths too
    assert vocab.parse_vocabulary_spec("shapes,colours.txt")[0] == ["red", "blue", "circle"]
    with pytest.raises(WeightscopeError, match="did you mean colors"):
        vocab.check_vocabulary_spec("shapes,colours.txt,colrs")
