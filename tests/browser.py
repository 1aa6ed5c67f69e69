"""Open an HTML page in headless Chromium and say what it drew (not a test file: the tests import it).

Made for the page `dvc plots show` / `dvc plots diff` write (dvc_plots/index.html): how many vega views
rendered, what the page's JS complained about, whether it loads scripts from the network, and a
screenshot with a measure of whether it is blank.

    from tests.browser import chromium_path, render
    if chromium_path() is None: pytest.skip("no chromium")
    r = render(Path("dvc_plots/index.html"), tmp_path / "plots.png")
    assert r["views"] == r["expected_views"] and not r["errors"] and not r["external_scripts"]

Chromium is the Debian package `chromium` (.ci/run installs it); set CHROMIUM=/path/to/chrome to use
another build. The flags work as root in a container (no sandbox, no GPU, no /dev/shm). By default
every host name fails to resolve, so a page that needs the network fails the same way everywhere.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["BrowserUnavailable", "BrowserError", "chromium_path", "chromium_version", "render"]

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# A vega view (vega-embed output) is a <canvas class="marks"> or <svg class="marks">.
_VIEW = re.compile(r"<(?:canvas|svg)\b[^>]*\bclass=\"marks\"", re.I)
_EMBED = re.compile(r"class=\"vega-embed\b", re.I)
_EMBED_CALL = re.compile(r"vegaEmbed\(\s*['\"]#")  # DVC's per-plot call: vegaEmbed('#<id>', spec)
_EXTERNAL_SCRIPT = re.compile(r"<script\b[^>]*?\bsrc\s*=\s*[\"']?((?:https?:)?//[^\"'\s>]+)", re.I)
# --enable-logging=stderr prints console messages as `...:INFO:CONSOLE:45] "text", source: url (45)`
# (older builds: `CONSOLE(45)]`).
_CONSOLE = re.compile(r":CONSOLE(?::\d+|\(\d+\))\] \"(.*)\", source: ")
# Uncaught exceptions and rejected promises (vegaEmbed undefined, a spec vega-embed rejects), and
# vega's own logger at level error.
_ERROR = re.compile(r"^(Uncaught\b|ERROR\b|Error\b)")


class BrowserUnavailable(RuntimeError):
    """No Chromium on this machine."""


class BrowserError(RuntimeError):
    """Chromium ran but did not produce the page's DOM or screenshot."""


def chromium_path() -> str | None:
    """The Chromium executable: $CHROMIUM if set, else the first of chromium, google-chrome... on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return shutil.which(env) or (env if os.access(env, os.X_OK) else None)
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@functools.cache
def chromium_version(path: str | None = None) -> str:
    """`chromium --version`, e.g. 'Chromium 150.0.7871.100 built on Debian GNU/Linux 12 (bookworm)'."""
    exe = path or _require()
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    return done.stdout.strip()


def _require() -> str:
    exe = chromium_path()
    if exe is None:
        raise BrowserUnavailable(
            "Chromium not found: install the Debian package `chromium` (apt-get install -y chromium; "
            ".ci/run does) or point $CHROMIUM at a Chrome/Chromium executable"
        )
    return exe


def _flags(profile: str, offline: bool, budget_ms: int, window: tuple[int, int]) -> list[str]:
    flags = [
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--mute-audio",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        f"--virtual-time-budget={budget_ms}",  # run the page's JS (and timers) this long, in virtual time
        f"--window-size={window[0]},{window[1]}",
    ]
    if offline:
        flags.append("--host-resolver-rules=MAP * ~NOTFOUND")
    return flags


def _measure(png: Path) -> tuple[int, int, int]:
    """(distinct colours, pixels darker than near-white, all pixels) of a screenshot."""
    from PIL import Image

    with Image.open(png) as im:
        rgb = im.convert("RGB")
    colours = rgb.getcolors(maxcolors=1 << 24)
    hist = rgb.convert("L").histogram()
    return len(colours or ()), sum(hist[:250]), sum(hist)


def render(
    html: Path,
    screenshot: Path,
    *,
    offline: bool = True,
    budget_ms: int = 15000,
    window: tuple[int, int] = (1400, 5000),
    timeout: float = 180,
) -> dict:
    """Load `html` (a file) in headless Chromium, let its JS run, dump the DOM and save a PNG.

    Returns a dict:
      views            vega views that rendered (<canvas|svg class="marks"> in the DOM after the JS ran)
      embeds           vega-embed containers in the DOM (class="vega-embed")
      expected_views   vegaEmbed('#id', ...) calls in the page source (DVC writes one per vega plot)
      errors           number of console errors: uncaught exceptions/rejections, vega ERROR logs
      error_messages   their texts
      warnings         console messages that vega logged as warnings ("WARN ...")
      console          every console message
      external_scripts http(s):// or // URLs of <script src> in the page source
      screenshot       path of the PNG (window size `window`)
      colours          distinct colours in the PNG
      nonwhite_px      its pixels with luminance < 250 (one DVC line plot: ~9,000)
      nonwhite_share   nonwhite_px / all pixels
      nonblank         colours >= 32 and nonwhite_px >= 2000 (an empty page has 1 colour, 0 px); the
                       vega views count is the real check, this says the PNG is not an empty page
      seconds          wall time of the Chromium run
      chromium         the executable used
    Raises BrowserUnavailable without Chromium, BrowserError if Chromium fails or writes no PNG.
    offline=True makes every host name unresolvable, so network resources fail fast.
    """
    exe = _require()
    html = Path(html).resolve()
    screenshot = Path(screenshot).resolve()
    if not html.is_file():
        raise FileNotFoundError(html)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.unlink(missing_ok=True)
    source = html.read_text(encoding="utf-8", errors="replace")

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [exe, *_flags(profile, offline, budget_ms, window),
               f"--screenshot={screenshot}", "--dump-dom", html.as_uri()]
        start = time.monotonic()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise BrowserError(f"Chromium took over {timeout}s on {html}") from exc
        seconds = time.monotonic() - start

    dom = done.stdout
    if done.returncode != 0 or not dom.strip() or not screenshot.is_file():
        tail = "\n".join(done.stderr.splitlines()[-20:])
        raise BrowserError(
            f"Chromium exited {done.returncode} on {html} (DOM: {len(dom)} chars, "
            f"screenshot written: {screenshot.is_file()}):\n{tail}"
        )

    console = [m.group(1) for m in map(_CONSOLE.search, done.stderr.splitlines()) if m]
    errors = [m for m in console if _ERROR.match(m)]
    colours, nonwhite, pixels = _measure(screenshot)
    return {
        "views": len(_VIEW.findall(dom)),
        "embeds": len(_EMBED.findall(dom)),
        "expected_views": len(_EMBED_CALL.findall(source)),
        "errors": len(errors),
        "error_messages": errors,
        "warnings": [m for m in console if m.startswith("WARN")],
        "console": console,
        "external_scripts": _EXTERNAL_SCRIPT.findall(source),
        "screenshot": str(screenshot),
        "colours": colours,
        "nonwhite_px": nonwhite,
        "nonwhite_share": round(nonwhite / pixels, 4) if pixels else 0.0,
        "nonblank": colours >= 32 and nonwhite >= 2000,
        "seconds": round(seconds, 2),
        "chromium": exe,
    }
