"""Offline WordNet: class resolution for CIFAR-10/100 and ImageNet-1k, and the authors' depth convention.

Depths below were derived by hand from WordNet 3.0's hypernym chains (written out in the comments), not
with the code under test; the lowest-common-hypernym rules are checked on a small synthetic hierarchy.
"""
import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from weightscope.core.errors import WeightscopeError
from weightscope.concepts.vocab import load_vocabulary
from weightscope.concepts.wordnet import WordNet, imagenet_wnids, is_wnid, load_wordnet, read_overrides, wnid

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wn():
    return load_wordnet()


def test_every_cifar_and_imagenet_class_resolves_offline(wn):
    for name in ("cifar10", "cifar100"):
        classes = load_vocabulary(name)
        offsets = wn.resolve_all(classes)
        assert len(set(offsets)) == len(classes), f"two {name} classes share a synset"
    ids = imagenet_wnids()
    assert len(ids) == 1000 and len(set(ids)) == 1000 and ids[0] == "n01440764" and ids[-1] == "n15075141"
    assert [wnid(o) for o in wn.resolve_all(ids)] == ids


def test_overrides_are_the_pictured_sense_and_documented(wn):
    # first noun senses that are wrong for a picture class, and the sense each override picks
    assert wn.name(wn.senses("seal")[0]) == "sealing_wax.n.01"
    assert wnid(wn.resolve("seal")) == "n02076196"            # seal.n.09, the marine mammal
    assert wn.name(wn.resolve("ray")) == "ray.n.07"
    assert wn.name(wn.resolve("television")) == "television_receiver.n.01"
    assert wn.name(wn.resolve("star")) == "star.n.05"
    assert wn.name(wn.resolve("maple tree")) == "maple.n.02"
    assert wn.name(wn.resolve("Aquarium  Fish")) == "fish.n.01"    # case and spacing do not matter
    readme = (ROOT / "concepts" / "README.md").read_text()
    shipped = read_overrides(ROOT / "concepts" / "wordnet" / "overrides.tsv")
    assert len(shipped) >= 20
    for name in shipped:
        assert f"`{name}`" in readme, f"override {name!r} is not listed in concepts/README.md"


def test_resolution_forms_and_errors(wn):
    dog = wn.resolve("dog")
    assert wn.name(dog) == "dog.n.01" and wnid(dog) == "n02084071"
    assert wn.resolve("n02084071") == dog == wn.resolve("dog.n.01")
    assert wn.name(wn.resolve("diamond.n.03")) == "rhombus.n.01"
    assert wn.resolve("seal", {"seal": "seal.n.02"}) == wn.senses("seal")[1]   # the caller's override wins
    assert is_wnid("n01440764") and not is_wnid("dog")
    with pytest.raises(WeightscopeError, match="no WordNet noun synset and no override") as err:
        wn.resolve("blorfwidget")
    assert "\n" not in str(err.value)
    with pytest.raises(WeightscopeError, match="not a WordNet 3.0 noun synset id"):
        wn.resolve("n99999999")
    with pytest.raises(WeightscopeError, match="no noun sense"):
        wn.resolve("dog.n.99")


def test_known_depths(wn):
    r = wn.resolve
    # dog.n.01 -> domestic_dog chain: dog, canine, carnivore, placental, mammal, vertebrate, chordate, animal,
    # organism, living_thing, whole, object, physical_entity, entity (13 edges); shortest route via
    # domestic_animal: dog, domestic_animal, animal, organism, living_thing, whole, object, physical_entity, entity (8)
    assert wn.max_depth(r("dog")) == 13 and wn.min_depth(r("dog")) == 8
    # carnivore.n.01 lies 11 edges below entity.n.01 -> depth 12 (NLTK: dog-cat Wu-Palmer 24/28 = 0.857)
    assert wn.lch_depth(r("dog"), r("cat")) == (12, r("carnivore.n.01"))
    # craft.n.02 -> vehicle -> conveyance -> instrumentality -> artifact -> whole -> object -> physical_entity
    # -> entity: 8 edges -> depth 9
    assert wn.lch_depth(r("airplane"), r("ship")) == (9, r("craft.n.02"))
    assert wn.lch_depth(r("cat"), r("cat"))[0] == wn.max_depth(r("cat")) + 1
    assert wn.lch_depth(r("entity.n.01"), r("dog")) == (1, r("entity.n.01"))


def _write_hierarchy(folder: Path, synsets: dict, lemmas: dict) -> None:
    folder.mkdir()
    rows = "".join(f"{o:08d}\t{name}\t{','.join(f'{h:08d}' for h in hyp)}\n" for o, (name, hyp) in synsets.items())
    (folder / "synsets.tsv.gz").write_bytes(gzip.compress(rows.encode()))
    rows = "".join(f"{k}\t{','.join(f'{o:08d}' for o in v)}\n" for k, v in lemmas.items())
    (folder / "lemmas.tsv.gz").write_bytes(gzip.compress(rows.encode()))
    (folder / "overrides.tsv").write_text("# none\n")


def test_lowest_common_hypernym_rules_on_a_planted_hierarchy(tmp_path):
    # root - p - aardvark - r, and r also directly under root: r has min depth 1, max depth 3
    # root - s ; m under r and s: min depth 2, max depth 4 ; c2 under m: min 3, max 5
    # c1 at the end of a chain root - t1 - t2 - t3 - c1: min = max = 4
    # u and v both under c1 and c2: the min-depth rule picks c1 (4 > 3): depth max(c1) + 1 = 5
    # (the max-depth rule would pick c2: depth 6)
    # beta under r and zeta (zeta under root): min 2, max 4 ; alpha under t1: min = max = 2
    # w, x under alpha and beta: common ancestors with the deepest min depth (2) are alpha, beta and aardvark;
    # sorted by name aardvark comes first: depth max(aardvark) + 1 = 3, subsumer aardvark
    # beta vs w: tied beta and aardvark, but beta (the first synset) is a candidate: depth 5, subsumer beta
    S = {0: ("root.n.01", ()), 1: ("p.n.01", (0,)), 2: ("aardvark.n.01", (1,)), 3: ("r.n.01", (2, 0)),
         4: ("s.n.01", (0,)), 5: ("m.n.01", (3, 4)), 6: ("c2.n.01", (5,)), 7: ("t1.n.01", (0,)),
         8: ("t2.n.01", (7,)), 9: ("t3.n.01", (8,)), 10: ("c1.n.01", (9,)), 11: ("u.n.01", (10, 6)),
         12: ("v.n.01", (6, 10)), 13: ("alpha.n.01", (7,)), 14: ("zeta.n.01", (0,)), 15: ("beta.n.01", (3, 14)),
         16: ("w.n.01", (15, 13)), 17: ("x.n.01", (13, 15))}
    _write_hierarchy(tmp_path / "wn", S, {"u": [11], "v": [12], "w": [16], "x": [17], "m": [5]})
    wn = WordNet(tmp_path / "wn")
    assert (wn.min_depth(5), wn.max_depth(5)) == (2, 4)
    assert wn.lch_depth(11, 12) == (5, 10)
    assert (wn.min_depth(15), wn.max_depth(15)) == (2, 4)
    assert wn.lch_depth(16, 17) == (3, 2)
    assert wn.lch_depth(15, 16) == (5, 15)
    # m is an ancestor of u; tied with aardvark (min depth 2): the rule is asymmetric, as NLTK's
    assert wn.lch_depth(wn.resolve("m"), wn.resolve("u")) == (5, 5)
    assert wn.lch_depth(wn.resolve("u"), wn.resolve("m")) == (3, 2)


def test_shipped_data_is_small():
    folder = ROOT / "concepts" / "wordnet"
    assert sum(f.stat().st_size for f in folder.iterdir()) < 3_000_000


@pytest.mark.slow  # parses the 15 MB data.noun: about 30 s
@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(), reason="WordNet 3.0 (wordnet-base) not installed")
def test_build_script_reproduces_the_shipped_files():
    pytest.importorskip("timm")
    if shutil.which(sys.executable) is None:
        pytest.skip("no interpreter path")
    out = subprocess.run([sys.executable, str(ROOT / "concepts" / "build_wordnet.py"), "--check"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_resolve_how_says_what_chose_each_synset(wn):
    assert wn.resolve_how("crane") == (10914447, "first sense")            # crane.n.01, Stephen Crane
    assert wn.resolve_how("crane.n.04") == (3126707, "sense")              # the lifting device
    assert wn.resolve_how("n03126707") == (3126707, "wordnet id")
    assert wn.resolve_how("seal") == (2076196, "shipped override")         # seal.n.09, the mammal
    assert wn.resolve_how("crane", {"crane": "crane.n.05"}) == (2012849, "override")  # the bird


def test_sense_note_names_the_sense_taken_and_how_to_choose_another(wn):
    """Issue 26, kind 3: object.n.01 is an ancestor of each physical-object sense; crane has five such senses
    (two writers, the constellation Grus, the machine, the bird), kilogram none."""
    assert wn.is_physical_object(wn.resolve("crane.n.04")) and not wn.is_physical_object(wn.resolve("kilogram"))
    note = wn.sense_note("crane", 10914447, "first sense")
    assert note.startswith("class 'crane' resolved to crane.n.01 (a writer), the first of 5 physical-object senses")
    assert "crane.n.05 (a wading bird)" in note and "crane.n.03 = grus.n.01 (a constellation)" in note
    assert note.endswith("add a line such as 'crane<TAB>crane.n.03' to an overrides file (--synsets FILE)")
    assert "not a physical object" in wn.sense_note("kilogram", wn.resolve("kilogram"), "first sense")
    # no note when the user or the shipped table chose, or when the only object sense was taken
    assert wn.sense_note("crane", 10914447, "override") is None
    assert wn.sense_note("limousine", wn.resolve("limousine"), "first sense") is None
    assert wn.sense_note("Stephen Crane", 10914447, "first sense") is None


def test_shipped_class_lists_were_reviewed(wn):
    """The lists the CLI ships (cifar10, cifar100, the bundled shapes) never get a sense note: their names were
    checked when the lists were built (concepts/build_wordnet.py)."""
    from weightscope.shapes.world import SHAPES

    for names in (load_vocabulary("cifar10"), load_vocabulary("cifar100"), SHAPES):
        for n in names:
            off, how = wn.resolve_how(n)
            assert wn.sense_note(n, off, how) is None, n
