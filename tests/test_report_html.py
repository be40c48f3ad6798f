"""The inspection report's HTML, parsed with the standard library, against the Inspection it was written from.

Every number and label a reader sees (head titles and themes, each direction's id, sigma, concepts with
coefficients, fidelity, the settings line) is read back from the page and compared with the result object;
a report that drops, swaps or misformats any of them fails here.
"""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest

from weightscope.analyses.inspection import Direction, HeadReport, Inspection
from weightscope.reports.inspection import write_report


class _Page(HTMLParser):
    """Collects the intro paragraphs, each card's title and table rows, and the embedded images."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paragraphs, self.cards, self.images, self.headings, self.title = [], [], [], [], ""
        self._tag, self._text, self._row, self._in_card = None, [], None, False
        self.open_divs, self.nested_cards = 0, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div":
            self.open_divs += 1
        if tag == "div" and attrs.get("class") == "card":
            self.nested_cards |= self.open_divs > 2  # inside <div class='cards'> only
            self.cards.append({"title": "", "rows": []})
            self._in_card = True
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "tr" and self._in_card:
            self._row = []
        elif tag in ("p", "h1", "h2", "h3", "td", "th", "title"):
            self._tag, self._text = tag, []

    def handle_endtag(self, tag):
        if tag == "div":
            self.open_divs -= 1
        if tag == self._tag:
            text = "".join(self._text)
            if tag == "p":
                self.paragraphs.append(text)
            elif tag in ("h1", "h2"):
                self.headings.append(text)
            elif tag == "title":
                self.title = text
            elif tag == "h3":
                self.cards[-1]["title"] = text
            elif tag == "td" and self._row is not None:
                self._row.append(text)
            self._tag = None
        elif tag == "tr" and self._row is not None:
            if self._row:  # header rows hold <th> only
                self.cards[-1]["rows"].append(self._row)
            self._row = None
        elif tag == "table":
            self._in_card = False

    def handle_data(self, data):
        if self._tag is not None:
            self._text.append(data)


def _parse(path):
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


_DIR = re.compile(r"^(?P<side>[wr])(?P<index>\d+)(?P<sign>[+-])(?: ~\[(?P<group>[\d, ]+)\])?$")
_TERM = re.compile(r"^(?P<concept>.*) \((?P<coef>-?\d+\.\d+)\)$")


def _concepts(cell: str):
    """'a (0.50), b (0.25)' -> [('a', 0.5), ('b', 0.25)] (split after each closing parenthesis)."""
    if not cell or cell == "(no concept)":
        return []
    parts = re.split(r"(?<=\)), ", cell)
    return [(m["concept"], float(m["coef"])) for m in map(_TERM.match, parts)]


def check_report_matches(result: Inspection, path, n_directions: int = 4):
    """Assert that the report at ``path`` shows exactly what ``result`` holds (first ``n_directions`` per head)."""
    page = _parse(path)
    s = result.settings
    intro = page.paragraphs[0]
    for fact in (result.model, result.vocabulary, f"({result.vocabulary_size} concepts)", f"solver {s['method']}",
                 f"k = {s['k']}", f"lambda = {s['lam']}", f"joint map {s['joint_mode']}"):
        assert fact in intro, fact
    assert ("image mean subtracted" in intro) == bool(s["image_mean"])
    assert page.open_divs == 0 and not page.nested_cards  # every card closed, none inside another
    assert page.title == f"weightscope inspection: {result.model}"
    assert page.headings == [page.title, "Singular-value spectra", "Head themes", "Heads"]
    assert len(page.images) == 1 and page.images[0].startswith("data:image/png;base64,")  # the spectra
    # the theme map is an HTML grid: one cell per head, its theme as text, linking to the head's card
    text = path.read_text(encoding="utf-8")
    for (l, h), rep in result.heads.items():
        theme = "dead (writes nothing)" if rep.dead else (rep.theme() or "(no concept)")
        assert f"<a data-text href='#head-{l}-{h}' title='layer {l}, head {h}: {html.escape(theme)}'" in text
    keys = sorted(result.heads)
    assert len(page.cards) == len(keys)
    for card, key in zip(page.cards, keys):
        rep = result.heads[key]
        assert card["title"] == f"Layer {key[0]}, head {key[1]} \u2014 {rep.theme()}"
        expected = [(i, side, sign) for side in s["sides"] for i in rep.explained(side)[:n_directions]
                    for sign in (1, -1)]
        assert len(card["rows"]) == len(expected)
        for row, (i, side, sign) in zip(card["rows"], expected):
            ident, sigma, concepts, fidelity = row
            m = _DIR.match(ident)
            assert m, ident
            assert (m["side"], int(m["index"]), m["sign"]) == (side[0], i, "+" if sign > 0 else "-")
            d = rep.direction(i, side, sign)
            assert (m["group"] is not None) == bool(d.group)
            if d.group:
                assert [int(x) for x in m["group"].split(",")] == d.group
            assert float(sigma) == pytest.approx(rep.s[i], abs=5.01e-4)
            if not d.concepts:  # an empty explanation is said to be one, with no fidelity (issue 12, kind 3)
                assert (concepts, fidelity) == ("(no concept)", "-")
                continue
            shown = _concepts(concepts)
            assert [c for c, _ in shown] == d.concepts[:5]
            assert [w for _, w in shown] == pytest.approx(d.coefficients[:5], abs=5.01e-3)
            assert float(fidelity) == pytest.approx(d.fidelity, abs=5.01e-3)
    return page


def _direction(index, side, sign, concepts, coefs, fid, group=None):
    return Direction(index, side, sign, concepts, coefs, fid, group)


def _hand_made() -> Inspection:
    """Two heads with distinct numbers everywhere, a degenerate group, an empty explanation, and concept names
    that need escaping."""
    names = ["red & blue", "<circle>", "snowy mountains", "a \"quoted\" word", "dog", "cat", "tree"]
    heads = {}
    for (layer, head), s in (((0, 2), [3.25, 1.5, 1.5, 0.125]), ((1, 0), [9.0, 4.0, 0.5, 0.25, 0.2, 0.1])):
        dirs = []
        for i in range(len(s)):
            for side in ("write", "read"):
                for sign in (1, -1):
                    k = (i + layer + (side == "read") + (sign < 0)) % len(names)
                    picked = [names[(k + j) % len(names)] for j in range(max(1, 6 - i))]  # 6 atoms: 5 shown
                    coefs = [round(0.9 / (j + 1) + 0.01 * i, 6) for j in range(len(picked))]
                    if (layer, i, side, sign) == (1, 2, "read", -1):
                        picked, coefs = [], []  # nothing explained
                    group = [1, 2] if (layer, head) == (0, 2) and i in (1, 2) else None
                    dirs.append(_direction(i, side, sign, picked, coefs, round(0.5 + 0.1 * i + 0.01 * layer, 6),
                                           group))
        heads[layer, head] = HeadReport(layer, head, s, [[1, 2]] if (layer, head) == (0, 2) else [], dirs)
    settings = {"method": "nnomp", "k": 6, "lam": 0.4, "joint_mode": "affine", "normalize": "l2",
                "image_mean": True, "sides": ["write", "read"], "n_directions": None}
    return Inspection("ws-test <tiny> & co", "custom list", 7, settings, heads)


def test_report_shows_every_number_and_label_of_a_hand_made_inspection(tmp_path):
    result = _hand_made()
    path = write_report(result, tmp_path / "report.html", n_directions=3)
    page = check_report_matches(result, path, n_directions=3)
    # hand-derived theme of head (1, 0): sum over its write directions 0-2 of coefficient x sigma per concept
    assert page.cards[1]["title"].endswith(result.heads[1, 0].theme())
    score = {}
    for d in result.heads[1, 0].directions:
        if d.side == "write" and d.index < 4:
            for c, w in zip(d.concepts, d.coefficients):
                score[c] = score.get(c, 0.0) + w * result.heads[1, 0].s[d.index]
    assert page.cards[1]["title"].endswith(max(sorted(score), key=score.get))
    # n_directions limits the rows: 3 directions x 2 sides x 2 signs
    assert len(page.cards[0]["rows"]) == 12
    # the default shows 4 directions per head
    check_report_matches(result, write_report(result, tmp_path / "default.html"), n_directions=4)
    assert len(_parse(tmp_path / "default.html").cards[1]["rows"]) == 16
    # names that need escaping come back intact (the parser unescapes what the report escaped)
    assert {"red & blue", "<circle>", 'a "quoted" word'} <= {c for card in page.cards for r in card["rows"]
                                                           for c, _ in _concepts(r[2])}


def test_report_of_a_real_inspection_from_the_cli(tiny_name, tmp_path, capsys, monkeypatch):
    """`weightscope inspect` writes report.html and inspection.json from one run: the page shows the JSON."""
    from weightscope.cli import main

    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    vocab = tmp_path / "v.txt"
    vocab.write_text("\n".join(["red", "blue", "green", "circle", "square", "triangle", "dog", "car", "tree",
                                "house", "ocean", "violin"]))
    out = tmp_path / "out"
    assert main(["inspect", tiny_name, "--vocab", str(vocab), "--k", "3", "--layers", "1", "--heads", "0,3",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    result = Inspection.from_json(out / "inspection.json")
    check_report_matches(result, out / "report.html")
    shown = [r[2] for card in _parse(out / "report.html").cards for r in card["rows"]]
    assert sum(bool(c) for c in shown) >= len(shown) // 2  # concept labels are there to be checked


def test_layer_labels_come_from_the_adapters(tiny_model):
    """Every report names layers through adapters.labels.layer_label (issue 25): each block hook point the adapter
    gives reads "block i", in the order of the blocks, and the other families' paths read the same way."""
    from weightscope.models.adapters import block_modules
    from weightscope.models.adapters.labels import head_label, layer_label

    names = block_modules(tiny_model)["names"]
    assert [layer_label(n) for n in names] == [f"block {i}" for i in range(len(names))]
    assert [layer_label(n + ".attn") for n in names][-1] == f"block {len(names) - 1} (attention)"
    assert layer_label("visual.trunk.blocks.7.mlp") == "block 7 (MLP)"                      # timm ViT
    assert layer_label("vision_model.encoder.layers.11.self_attn") == "block 11 (attention)"  # transformers CLIP
    assert layer_label("layer3.1") == "stage 3, block 1"                                      # ResNet
    assert layer_label(4) == layer_label("4") == "layer 4" and head_label(4, 2) == "layer 4, head 2"
    assert layer_label("fc") == "fc" and layer_label("features.denseblock1.conv") == "denseblock1.conv"
