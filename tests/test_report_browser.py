"""The report in a real browser: Debian's headless Chromium renders the page.

A demo-sized run (the simulated notebook scene, ``tilesky demo``) writes its
report; Chromium takes a screenshot of ``report.html`` and dumps the DOM of
a copy with a probe script that records, after the load event, every
image's decoded size and the page's headings. ``make test`` installs
Chromium (``make system``); without it this test fails, it is not skipped.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a sandbox with no network but loopback and no display (as
# root: --no-sandbox); the background services would only try the network.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
WIDTH, HEIGHT = 1280, 2400
#: Every figure of a run on a simulated scene (truth and catalogue known).
FIGURES = {
    "input",
    "background",
    "background_rms",
    "mask",
    "residual",
    "subtracted",
    "scale",
    "flux",
    "radius",
}
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map((img) => ({
    alt: img.alt, complete: img.complete,
    width: img.naturalWidth, height: img.naturalHeight,
  }));
  const headings = [...document.querySelectorAll("h1, h2")].map((h) => h.textContent);
  const verdict = document.querySelector("h2 + p");
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({
    images, headings, verdict: verdict ? verdict.textContent : null,
  });
  document.body.appendChild(out);
});
</script>"""


def _chromium(tmp_path, *args):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no browser at {CHROMIUM}: run `make system` (Debian's chromium)")
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    demo = ["demo", "--size", "480", "--scheduler", "threads", "--dir", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "tilesky.cli", *demo],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return out / "demo_report" / "report.html"


def _probe(tmp_path, html_text, name):
    page = tmp_path / name
    page.write_text(html_text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _chromium(
        tmp_path, "--virtual-time-budget=10000", "--dump-dom", page.as_uri()
    )
    start = dom.index('<pre id="probe">') + len('<pre id="probe">')
    return json.loads(dom[start : dom.index("</pre>", start)].replace("&quot;", '"'))


def test_every_figure_loads_and_the_verdict_shows(report, tmp_path):
    shutil.copytree(report.parent, tmp_path, dirs_exist_ok=True)
    seen = _probe(tmp_path, report.read_text(encoding="utf-8"), "probe.html")
    alts = [img["alt"] for img in seen["images"]]
    assert sorted(alts) == sorted(FIGURES)
    for img in seen["images"]:
        assert img["complete"] and img["width"] > 200 and img["height"] > 100, img
    assert seen["headings"][:3] == ["tilesky report", "Verdict", "Figures"]
    assert seen["verdict"].startswith(("No warning:", "Warning:"))


def test_a_broken_image_is_caught(report, tmp_path):
    # The probe sees a figure the browser cannot decode.
    text = report.read_text(encoding="utf-8")
    start = text.index("src='data:image/png;base64,") + len(
        "src='data:image/png;base64,"
    )
    broken = text[:start] + "AAAA" + text[start + 4 :]
    seen = _probe(tmp_path, broken, "broken.html")
    widths = [img["width"] for img in seen["images"]]
    assert widths.count(0) == 1


def test_screenshot_shows_the_panels(report, tmp_path):
    shot = tmp_path / "report.png"
    _chromium(
        tmp_path,
        f"--window-size={WIDTH},{HEIGHT}",
        f"--screenshot={shot}",
        report.as_uri(),
    )
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert rgb.shape == (HEIGHT, WIDTH, 3)
    # Not a blank page: a good part of it is drawn, and much of that in
    # colour (the maps' colour scales), not only text and grey axes.
    drawn = (rgb < 235).any(axis=2)
    colour = (rgb.max(axis=2) - rgb.min(axis=2)) > 60
    assert drawn.mean() > 0.15, drawn.mean()
    assert colour.mean() > 0.03, colour.mean()
    # The top band holds the title and verdict: text, on a white page.
    top = rgb[:200]
    assert 0.005 < (top < 128).all(axis=2).mean() < 0.2
