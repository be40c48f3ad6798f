"""Every report opened in a real headless Chromium: it loads with no console error, its search finds a concept or
class known to be in the data, its drawn text labels do not overlap, and every number it shows equals the result
JSON written with it (tests/browser_helpers.py holds the one helper that reads numbers back from the page).

Needs Debian's chromium and chromium-driver and selenium (the dev extra); `.ci/run` installs them. On a machine
without them the tests skip with that reason, except in CI (CI=true), where they fail.
The reports are made once per session, from the command line as a user would.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from browser_helpers import (Browser, check_numbers, in_ci, missing_reason, overlaps, search, text_boxes,
                             unbound_number_cells)

# the shared data sit beside the checkout (CI: ../shared); WEIGHTSCOPE_SHARED points elsewhere (e.g. a worktree)
SHARED = Path(os.environ.get("WEIGHTSCOPE_SHARED", Path(__file__).resolve().parents[1].parent / "shared")) \
    / "data" / "deephierarchy-convnext"
REASON = missing_reason()


@pytest.fixture(scope="session")
def browser():
    if REASON:
        if in_ci():
            pytest.fail(f"browser tests must run in CI: {REASON}")
        pytest.skip(REASON)
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="session")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("reports")


def _cli(*args):
    from weightscope.cli import main

    assert main([*args, "--quiet"]) == 0, args


def _open(browser, path):
    errors = browser.open(path)
    assert errors == [], errors
    return path


def _numbers(browser, result_json, minimum: int, all_bound: bool = True):
    n = check_numbers(browser, result_json)
    assert n >= minimum, f"only {n} numbers bound to the result"
    if all_bound:
        assert unbound_number_cells(browser) == []


# ------------------------------------------------------------------------------------------------ inspect

@pytest.fixture(scope="session")
def inspect_bundled(out):
    _cli("inspect", "--what", "vo,qk,mlp", "--vocab", "shapes_world", "--out", str(out / "inspect"))
    return out / "inspect"


def test_inspect_report_in_a_browser(browser, inspect_bundled):
    _open(browser, inspect_bundled / "report.html")
    data = json.loads((inspect_bundled / "inspection.json").read_text())
    _numbers(browser, data, minimum=1000)
    # the search reaches every direction, not only the four per head on the cards: a concept of direction 6
    h = data["heads"][-1]
    d = next(d for d in h["directions"] if d["index"] == 6 and d["concepts"])
    hits = search(browser, d["concepts"][0])
    where = f"layer {h['layer']}, head {h['head']}, {d['side']} 6{'+' if d['sign'] > 0 else '-'}"
    q = d["concepts"][0].lower()
    every = browser.js("return WS.searchers[0](arguments[0]).map(h => h.label)", q)  # all, not the first 300
    assert any(x.startswith(d["concepts"][0] + " (") and x.endswith(where) for x in every), (where, every[:5])
    expect = sum(q in c.lower() for h in data["heads"] for d in h["directions"] for c in d["concepts"])
    assert len(every) == expect and hits[:min(300, expect)] == every[:300]  # then rows of the QK / MLP tables
    shown = int(browser.js("return document.querySelector('#ws-results div').textContent").split()[0])
    rows = browser.js("return Array.from(document.querySelectorAll('table[id] tbody tr'))"
                      ".filter(r => r.textContent.toLowerCase().includes(arguments[0])).length", q)
    assert shown == expect + rows
    # sort and filter the heads
    browser.js("const s = document.getElementById('ws-sort'); s.value = 'sigma'; s.dispatchEvent(new Event('change'))")
    sig = browser.js("return Array.from(document.querySelectorAll('.card[data-layer]')).map(c => +c.dataset.sigma)")
    assert sig == sorted(sig, reverse=True) and len(sig) == len(data["heads"])
    expect = sorted(h["s"][0] for h in data["heads"])[::-1]
    assert sig == pytest.approx(expect, rel=1e-5)
    theme = browser.js("return document.querySelector('.card[data-layer]').dataset.theme")
    browser.js(f"const s = document.getElementById('ws-theme'); s.value = {json.dumps(theme)}; "
               "s.dispatchEvent(new Event('change'))")
    shown = browser.js("return Array.from(document.querySelectorAll('.card[data-layer]'))"
                       ".filter(c => c.style.display !== 'none').map(c => c.dataset.theme)")
    assert shown and set(shown) == {theme}
    # the index reaches the query-key and MLP sections from the top
    links = browser.js("return Array.from(document.querySelectorAll('#ws-nav a')).map(a => a.getAttribute('href'))")
    assert {"#qk", "#mlp", "#heads", "#themes"} <= set(links)


@pytest.fixture(scope="session")
def inspect_vit_b16(out):
    """A whole-model report of a random-init ViT-B-16 (144 heads), a small vocabulary to keep it quick."""
    _cli("inspect", "ViT-B-16", "--vocab", "general:200", "--directions", "4", "--out", str(out / "vitb16"))
    return out / "vitb16"


def test_whole_model_vit_b16_inspect_report_in_a_browser(browser, inspect_vit_b16):
    _open(browser, inspect_vit_b16 / "report.html")
    data = json.loads((inspect_vit_b16 / "inspection.json").read_text())
    assert len(data["heads"]) == 144
    _numbers(browser, data, minimum=144 * 4)
    concept = data["heads"][-1]["directions"][-1]["concepts"][0]
    assert search(browser, concept)
    cells = browser.js("return document.querySelectorAll('.grid-map td a[data-text]').length")
    assert cells == 144
    # the theme map's text stays inside its cells: no cell's text box runs into another's
    assert overlaps(text_boxes(browser, ".grid-map td a")) == []


# ------------------------------------------------------------------------------------------------ depth

def _depth_checks(browser, folder, known_class: str, minimum: int, max_clusters: int | None = None):
    """Numbers, search, and for each method's clusters (all, or the ``max_clusters`` largest) its tree: labels that
    never overlap and one drawn edge per tree edge; histogram ticks are whole numbers."""
    _open(browser, folder / "report.html")
    data = json.loads((folder / "depth.json").read_text())
    _numbers(browser, data, minimum=minimum)
    assert any(known_class in h for h in search(browser, known_class))
    for m, M in data["methods"].items():  # every cluster's tree, one at a time: labels never overlap
        clusters = M["similarity_graph"]["clusters"]
        order = sorted(range(len(clusters)), key=lambda k: -len(clusters[k]))[:max_clusters]
        for k in order:
            if len(clusters[k]) < 2:
                continue
            browser.js(f"WS.show({json.dumps(m)}, 'similarity', {k})")
            boxes = text_boxes(browser, f"#tree-{m} text.node-label")
            assert len(boxes) >= 2
            assert overlaps(boxes) == [], (m, k, overlaps(boxes)[:3])
            # one drawn edge per tree edge of the cluster
            n_edges = browser.js(f"return document.querySelectorAll('#tree-{m} g.edge').length")
            assert n_edges == len(boxes) - 1
    hist = text_boxes(browser, "svg.hist text")
    assert hist and overlaps(hist) == []
    ticks = browser.js("return Array.from(document.querySelectorAll('svg.hist .tick text')).map(t => t.textContent)")
    assert ticks and all(t.isdigit() for t in ticks), ticks  # integer depths and counts only


def test_depth_report_convnext_100_classes_in_a_browser(browser, out):
    if not SHARED.is_dir():
        (pytest.fail if in_ci() else pytest.skip)(f"the ConvNeXt matrices are not at {SHARED} (set WEIGHTSCOPE_SHARED)")
    _cli("depth", "--similarity", str(SHARED / "class_similarity.npy"), "--confusion", str(SHARED / "confusion.npy"),
         "--classes", str(SHARED / "wnids.txt"), "--out", str(out / "depth_convnext"))
    _depth_checks(browser, out / "depth_convnext", "house_finch", minimum=30)


def test_depth_report_imagenet_1000_classes_in_a_browser(browser, out):
    _cli("depth", "--classes", "imagenet", "--out", str(out / "depth_imagenet"))
    # no confusion matrix: 3 numbers per method; the 12 largest clusters of each method (the 100-class test
    # above walks every cluster)
    _depth_checks(browser, out / "depth_imagenet", "goldfish", minimum=12, max_clusters=12)
    # a cluster of hundreds of classes opens folded below depth 4, and unfolds on demand
    data = json.loads((out / "depth_imagenet" / "depth.json").read_text())
    m, k = max(((m, k) for m, M in data["methods"].items() for k in range(len(M["similarity_graph"]["clusters"]))),
               key=lambda mk: len(data["methods"][mk[0]]["similarity_graph"]["clusters"][mk[1]]))
    size = len(data["methods"][m]["similarity_graph"]["clusters"][k])
    assert size > 150
    browser.js(f"WS.show({json.dumps(m)}, 'similarity', {k})")
    folded = len(text_boxes(browser, f"#tree-{m} text.node-label"))
    browser.driver.find_element("id", f"expand-{m}").click()
    boxes = text_boxes(browser, f"#tree-{m} text.node-label")
    assert folded < size == len(boxes)
    assert overlaps(boxes) == []


# ------------------------------------------------------------------------------------------------ compare

def test_compare_report_in_a_browser(browser, out):
    _cli("compare", "--out", str(out / "compare"))
    _open(browser, out / "compare" / "report.html")
    data = json.loads((out / "compare" / "compare.json").read_text())
    _numbers(browser, data, minimum=20, all_bound=False)  # summary and per-layer tables (head rows: derived)
    tuned = data["comparisons"][0]["tuned"]
    assert any(tuned in h for h in search(browser, tuned))
    width = browser.js("return document.documentElement.scrollWidth")
    assert width <= 1400, "the page runs off the right edge of a 1400 px window"
    # a layer with no changed head reads n/a, never 0 %
    for k, layer in enumerate(data["comparisons"][0]["layers"]):
        if not layer["changed_heads"]:
            assert browser.js(f"return document.querySelector('#layers-0 tbody tr:nth-child({k + 1}) td:nth-child(4)')"
                              ".textContent") == "n/a"


# ------------------------------------------------------------------------------------------------ similarity

def test_similarity_report_in_a_browser(browser, out):
    _cli("similarity", "--out", str(out / "similarity"))
    _open(browser, out / "similarity" / "report.html")
    data = json.loads((out / "similarity" / "similarity.json").read_text())
    _numbers(browser, data, minimum=4)
    html = (out / "similarity" / "report.html").read_text()
    assert "resblocks" not in html and "<pre>" not in html  # human layer labels, no console dump
    assert "block 0" in html
    model = next(iter(data["models"]))
    assert any(model in h for h in search(browser, model))
    assert browser.js("return document.documentElement.scrollWidth") <= 1400


# ------------------------------------------------------------------------------------------------ sing

def test_sing_reports_in_a_browser(browser, out):
    _cli("sing", "--out", str(out / "sing"))
    _open(browser, out / "sing" / "report.html")
    data = json.loads((out / "sing" / "sing.json").read_text())
    _numbers(browser, data, minimum=20)
    assert browser.js("return document.documentElement.scrollWidth") <= 1400
    text = data["steering"][0]["text"]
    assert any(text in h for h in search(browser, text))
    _cli("sing", "--classifier", "bundled-cnn", "--out", str(out / "singc"))
    _open(browser, out / "singc" / "report.html")
    data = json.loads((out / "singc" / "sing.json").read_text())
    _numbers(browser, data, minimum=20)
    assert browser.js("return document.documentElement.scrollWidth") <= 1400
    text = data["statistics"]["per_text"][-1]["text"]
    assert any(text in h for h in search(browser, text))
    # no panel of nothing: the figure has no all-zero 'most free' panel, the page names those concepts instead
    blind = data["blind_to"]
    if blind and max(abs(v) for _, v in blind[:15]) < 0.005:
        assert "all read 0.00" in (out / "singc" / "report.html").read_text()
