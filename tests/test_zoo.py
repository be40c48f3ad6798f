"""The zoo end to end: `compare --zoo` on a small constructed family of the bundled model (base -> tuned ->
grandchild, base -> sibling) recovers the tree, and every number zoo.html shows is the Zoo's."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("powerlaw", reason="needs the zoo extra (in .[dev] too)")


def _grown(state, seed):
    """Every 2-D weight: small noise, and a random fifth of its largest 10 % entries grown by 20 % (kurtosis up)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in state.items():
        w = v.detach().float().numpy().copy()
        if w.ndim == 2 and w.size > 100:
            d = 0.02 * w.std() * rng.standard_normal(w.shape)
            top = np.argsort(-np.abs(w), axis=None)[: w.size // 10]
            idx = rng.choice(top, size=len(top) // 5, replace=False)
            d.flat[idx] += 0.2 * w.flat[idx]
            w = w + d
        out[k] = torch.from_numpy(w.astype(np.float32)).contiguous()
    return out


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    from weightscope.shapes import bundled

    folder = tmp_path_factory.mktemp("family")
    base = bundled.load("base")[0].state_dict()
    child = _grown(base, 1)
    paths = {"child": folder / "child.safetensors", "grandchild": folder / "grandchild.safetensors",
             "sibling": folder / "sibling.safetensors"}
    save_file(child, str(paths["child"]))
    save_file(_grown(child, 2), str(paths["grandchild"]))
    save_file(_grown(base, 3), str(paths["sibling"]))
    manifest = folder / "zoo.csv"
    manifest.write_text("label,checkpoint\n" + "\n".join(f"{k},{bundled.MODEL_NAME}:{v}" for k, v in paths.items()))
    return manifest


def test_zoo_tree_recovered_and_report_shows_its_numbers(family, tmp_path, capsys):
    from weightscope.analyses.zoo.analysis import KINDS
    from weightscope.cli import main

    out = tmp_path / "zoo"
    assert main(["compare", "bundled", "--manifest", str(family), "--out", str(out), "--zoo", "--in-process",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "family tree of 4 models (root base" in printed
    zoo = json.loads((out / "zoo.json").read_text())
    assert zoo["tree"]["parent"] == {"base": None, "child": "base", "grandchild": "child", "sibling": "base"}
    html = (out / "zoo.html").read_text()
    # every kind change the page shows is the Zoo's number
    for member in ("child", "grandchild", "sibling"):
        rows = [r for r in zoo["change"][member] if r["matrix"] in KINDS]
        for kind in KINDS:
            d2 = sum(r["d2"] for r in rows if r["matrix"] == kind)
            w2 = sum(r["w2"] for r in rows if r["matrix"] == kind)
            assert f"<td>{np.sqrt(d2 / w2):.4g}</td>" in html
    # the grandchild moved about twice as far from the base as the child
    ch = {m: sum(r["d2"] for r in zoo["change"][m] if r["matrix"] in KINDS) for m in ("child", "grandchild")}
    assert 1.5 < ch["grandchild"] / ch["child"] < 2.5
    # spectra were saved with each result and drift is tuned minus base
    d = next(r for r in zoo["drift"]["child"] if r["matrix"] == "mlp_in" and r["layer"] == 0)
    base_row = next(r for r in zoo["spectra"]["base"] if r["matrix"] == "mlp_in" and r["layer"] == 0)
    child_row = next(r for r in zoo["spectra"]["child"] if r["matrix"] == "mlp_in" and r["layer"] == 0)
    assert d["d_alpha"] == pytest.approx(child_row["alpha"] - base_row["alpha"])
    assert "Spectral drift" in html and "<img" in html
