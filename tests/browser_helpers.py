"""Drive a headless Chromium (Debian's chromium + chromium-driver, through selenium) over the HTML reports.

Shared by tests/test_browser.py and benchmarks/bench_report.py: open a page, collect its console errors, read
back every number bound to the result JSON (``data-path``), find numbers shown without a source, and measure
rendered text boxes for overlaps.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]


def chromium_paths() -> tuple[str | None, str | None]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    return browser, driver


def missing_reason() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    browser, driver = chromium_paths()
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not browser or not driver:
        return "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    return None


class Browser:
    """One headless Chromium with a fresh profile; ``open(path)`` loads a file and returns its console errors."""

    def __init__(self, width: int = 1400, height: int = 900):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        browser, driver = chromium_paths()
        self.profile = tempfile.mkdtemp(prefix="ws-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = browser
        for flag in FLAGS + [f"--user-data-dir={self.profile}", f"--window-size={width},{height}"]:
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(driver), options=opts)

    def open(self, path) -> list[str]:
        self.driver.get(Path(path).resolve().as_uri())
        return self.console_errors()

    def console_errors(self) -> list[str]:
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def screenshot(self, path, width: int = 1400):
        """The whole page at ``width`` px (the window grows to the page's height, capped at 16000 px)."""
        h = self.js("return Math.min(16000, document.documentElement.scrollHeight)")
        self.driver.set_window_size(width, max(600, h))
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(width, 900)

    def close(self):
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)


NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?%?$")


def bound_numbers(browser: Browser) -> list[tuple[str, str]]:
    """(path, displayed text, scale) of every element bound to the result JSON, as rendered (visible or not)."""
    return browser.js("return Array.from(document.querySelectorAll('[data-path]'))"
                      ".map(e => [e.dataset.path, e.textContent.trim(), +(e.dataset.scale || 1)])")


def unbound_number_cells(browser: Browser) -> list[str]:
    """Table cells whose whole text is a number but that name no source (no data-path inside); cells marked as
    text (data-text: a name such as the concept "23") are labels, not numbers."""
    cells = browser.js("return Array.from(document.querySelectorAll('td'))"
                       ".filter(td => !td.querySelector('[data-path], [data-text]'))"
                       ".map(td => td.textContent.trim())")
    return [c for c in cells if NUMBER.match(c)]


def lookup(doc, path: str):
    for part in path.split("/"):  # "#len": the length of the list reached so far
        doc = len(doc) if part == "#len" else doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def check_numbers(browser: Browser, result_json) -> int:
    """Assert every bound number equals the result JSON's value to the digits shown; returns how many were checked."""
    doc = json.loads(Path(result_json).read_text()) if not isinstance(result_json, dict) else result_json
    pairs = bound_numbers(browser)
    bad = []
    for path, text, scale in pairs:
        value = lookup(doc, path)
        shown = text.rstrip("%")
        if value is None or isinstance(value, bool):
            bad.append((path, text, value))
            continue
        # tolerance: half a unit in the last digit shown (significant-digit forms included)
        mantissa, _, exp = shown.lower().partition("e")
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        tol = 0.5 * 10.0 ** (-decimals) * 10.0 ** (int(exp) if exp else 0) * (1 + 1e-9)
        if not math.isclose(float(shown), scale * float(value), rel_tol=0, abs_tol=tol + 1e-12):
            bad.append((path, text, value))
    assert not bad, f"{len(bad)} displayed numbers differ from the result JSON, e.g. {bad[:5]}"
    return len(pairs)


def text_boxes(browser: Browser, selector: str) -> list[dict]:
    """Bounding boxes of the visible rendered text elements matched by ``selector`` (SVG <text> and the like)."""
    return browser.js("""
        return Array.from(document.querySelectorAll(arguments[0])).map(e => {
          const r = e.getBoundingClientRect(), s = getComputedStyle(e);
          return {text: e.textContent, x: r.left + window.scrollX, y: r.top + window.scrollY, w: r.width, h: r.height,
                  visible: s.display !== 'none' && s.visibility !== 'hidden' && s.opacity !== '0' && r.width > 0};
        }).filter(b => b.visible);""", selector)


def overlaps(boxes: list[dict], slack: float = 0.5) -> list[tuple[str, str]]:
    """Pairs of boxes that intersect by more than ``slack`` px in both directions (sweep over x)."""
    boxes = sorted(boxes, key=lambda b: b["x"])
    out = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if b["x"] >= a["x"] + a["w"] - slack:
                break
            if min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"]) > slack:
                out.append((a["text"], b["text"]))
    return out


def search(browser: Browser, query: str) -> list[str]:
    """Type ``query`` into the page's search box; the result labels shown."""
    from selenium.webdriver.common.by import By

    box = browser.driver.find_element(By.ID, "ws-search")
    box.clear()
    box.send_keys(query)
    return browser.js("return Array.from(document.querySelectorAll('#ws-results a.ws-hit')).map(a => a.textContent)")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
