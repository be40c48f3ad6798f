"""Self-contained HTML pages: inline CSS and script, figures as PNG data URIs or drawn in the page with D3.

Every page is one file that opens offline: the result data it draws from is embedded as JSON, the charting
library (D3, ISC licence, ``vendor/d3.min.js``, its notice kept in the page) is inlined, and a small shared
script gives each page a sticky index of its sections, a search box and sortable, filterable tables.

Numbers bound to the result: ``num(value, fmt, path)`` renders a number inside ``<span data-path=...>`` where
``path`` is the '/'-separated place of that value in the result JSON written next to the page, so a test (or a
reader) can check every displayed number against its source.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from functools import lru_cache
from pathlib import Path

_VENDOR = Path(__file__).parent / "vendor"
_ASSETS = Path(__file__).parent / "assets"

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0 auto 2rem;max-width:1320px;color:#222;padding:0 1rem}
h1{font-size:1.6rem;margin-top:1rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd;scroll-margin-top:4rem}
h3{font-size:1rem;margin:.8rem 0 .3rem;clear:both}
table{border-collapse:collapse;font-size:.85rem;margin:.3rem 0 .8rem}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}td:first-child{white-space:nowrap}table.sortable th{cursor:pointer;user-select:none}table.sortable th:after{content:" \\2195";color:#bbb}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:.8rem}
.card{border:1px solid #ddd;border-radius:6px;padding:.6rem;font-size:.82rem;scroll-margin-top:4rem;
 content-visibility:auto;contain-intrinsic-size:auto 520px}
.card td{white-space:nowrap}.card td:nth-child(3){white-space:normal;overflow-wrap:anywhere}
.muted{color:#666}img{max-width:100%;display:block}code{background:#f4f4f4;padding:0 .2rem;overflow-wrap:anywhere}
pre{white-space:pre-wrap;overflow-wrap:anywhere}
#ws-nav{position:sticky;top:0;z-index:10;background:#fff;border-bottom:1px solid #ddd;padding:.4rem 0;display:flex;
 flex-wrap:wrap;gap:.3rem .8rem;align-items:center;font-size:.85rem}
#ws-nav a{color:#1558b0;text-decoration:none}#ws-nav a:hover{text-decoration:underline}
#ws-search{width:18rem;padding:.2rem .4rem}#ws-results{position:absolute;top:100%;left:0;background:#fff;border:1px solid #ccc;
 max-height:60vh;overflow:auto;width:38rem;max-width:90vw;font-size:.82rem;display:none;box-shadow:0 4px 12px #0002}
#ws-results a{display:block;padding:.15rem .5rem;color:#222;text-decoration:none}#ws-results a:hover{background:#eef}
.ws-searchbox{position:relative}.hit{background:#fff3a0}.na{color:#999}
.controls{display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:center;margin:.4rem 0;font-size:.85rem}
.grid-map td{font-size:.7rem;padding:.15rem .25rem;max-width:7.5rem;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.grid-map td a{color:#111;text-decoration:none}.grid-map th{font-size:.7rem;padding:.15rem .3rem}
.tip{position:fixed;pointer-events:none;background:#222;color:#fff;padding:.25rem .5rem;border-radius:4px;font-size:.8rem;
 display:none;z-index:20;max-width:28rem}
.chart text{font-family:system-ui,sans-serif}
"""



class Markup(str):
    """HTML that ``table`` puts in a cell as it is (already escaped by whoever built it)."""


def esc(text) -> str:
    return html.escape(str(text))


def num(value, fmt: str, path: str | None = None, na: str = "n/a", scale: float = 1) -> Markup:
    """``value`` x ``scale`` formatted with ``fmt`` (a format spec such as '.3f'), bound to its place ``path`` in
    the result JSON (``scale``: e.g. 100 for a share shown in per cent); None / NaN read ``na``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return Markup(f"<span class='na'>{esc(na)}</span>")
    text = format(value * scale, fmt)
    if path is None:
        return Markup(esc(text))
    return Markup(f"<span data-path='{esc(path)}'" + (f" data-scale='{scale:g}'" if scale != 1 else "")
                  + f">{esc(text)}</span>")


def figure_to_img(fig, alt: str) -> str:
    """A matplotlib figure as an <img> tag with the PNG inlined; closes the figure."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def _cell(c, tag: str) -> str:
    return f"<{tag}>{c if isinstance(c, Markup) else esc(c)}</{tag}>"


def table(header: list[str], rows: list[list], table_id: str | None = None, sortable: bool = False,
          filter_box: bool = False, name: str | None = None) -> str:
    """An HTML table; cells are escaped unless they are ``Markup``. table_id: its rows are found by the page's
    search (listed under ``name``, default the id); sortable: click a header to sort; filter_box (needs table_id):
    a text box above it that hides the rows not holding the text typed."""
    head = "".join(_cell(h, "th") for h in header)
    body = "".join("<tr>" + "".join(_cell(c, "td") for c in row) + "</tr>" for row in rows)
    attrs = (f" id='{esc(table_id)}' data-name='{esc(name or table_id)}'" if table_id else "") \
        + (" class='sortable'" if sortable else "")
    box = (f"<div class='controls'><input data-filter='{esc(table_id)}' placeholder='filter rows'></div>"
           if filter_box and table_id else "")
    return f"{box}<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def heading(text: str, anchor: str, short: str | None = None) -> str:
    """An <h2> the page's index links to (``short``: its name in the index)."""
    data = f" data-short='{esc(short)}'" if short else ""
    return f"<h2 id='{esc(anchor)}'{data}>{esc(text)}</h2>"


@lru_cache(maxsize=None)
def asset(name: str) -> str:
    """The text of ``assets/<name>`` (the pages' scripts, kept as .js files beside this module)."""
    return (_ASSETS / name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _d3() -> str:
    code = (_VENDOR / "d3.min.js").read_text(encoding="utf-8")
    notice = (_VENDOR / "d3.LICENSE").read_text(encoding="utf-8").replace("*/", "* /")
    return f"/* D3 v7 (https://d3js.org), ISC licence:\n{notice}*/\n{code}"


def _json_for_script(data) -> str:
    """JSON safe inside <script>: no '</' can close the element early."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def page(title: str, body_html: str, data=None, script: str = "") -> str:
    """The whole page: index bar with search, body, embedded ``data`` (read as ``WS.data``), D3, and the page's own
    ``script`` (run after the shared one, so it can add searchers to ``WS.searchers`` and draw into the body)."""
    count = iter(range(10**6))  # every section gets an anchor, so the index reaches it
    body_html = re.sub(r"<h2>", lambda m: f"<h2 id='section-{next(count)}'>", body_html)
    data_tag = f"<script type='application/json' id='ws-data'>{_json_for_script(data)}</script>" if data is not None else ""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>"
            "<nav id='ws-nav'><span class='ws-searchbox'><input id='ws-search' type='search' "
            "placeholder='search concepts, classes, heads...' aria-label='search'><div id='ws-results'></div></span>"
            f"</nav>{body_html}{data_tag}<script>{_d3()}</script><script>{asset('explorer.js')}</script>"
            f"<script>(function(){{{script}}})();WS.readyAt = performance.now();</script></body></html>")
