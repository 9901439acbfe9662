"""A page as a person sees it: rendered by headless Chromium (Debian's ``chromium``), which reports what it loaded.

``inspect_page`` renders a copy of the page with a small script appended that, once the page has loaded, writes what
the browser built (every image's natural size, every table's header and cells, the visible text) into the DOM;
``--dump-dom`` prints that DOM. ``screenshot`` renders the page itself to a PNG. Where Chromium is missing or cannot
start, both skip the test with a line that says so.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
PROBE = """
<script>
window.addEventListener("load", () => {
  const cells = (row) => [...row.cells].map((c) => c.textContent.trim());
  const report = {
    images: [...document.images].map((i) => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})),
    tables: [...document.querySelectorAll("table")].map((t) => ({
      head: [...t.querySelectorAll("thead tr")].map(cells),
      rows: [...t.querySelectorAll("tbody tr")].map(cells),
    })),
    text: document.body.innerText,
  };
  const out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});
</script>
"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium chromium-driver); browser check skipped")


def _run(args: list[str], profile: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [_chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"Chromium cannot start here ({type(e).__name__}: {e}); browser check skipped")
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"Chromium cannot start here (exit {done.returncode}: {tail}); browser check skipped")
    return done


def inspect_page(page: Path, work: Path) -> dict[str, Any]:
    """``{"images": [{alt, complete, width}], "tables": [{head, rows}], "text"}`` as Chromium rendered ``page``."""
    work.mkdir(parents=True, exist_ok=True)
    probed = work / f"probed-{page.name}"
    source = page.read_text(encoding="utf-8")
    probed.write_text(source.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = _run(["--virtual-time-budget=3000", "--dump-dom", probed.resolve().as_uri()], work / "profile")
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', done.stdout, flags=re.S)
    assert found, f"the page's load event never ran: {done.stdout[-500:]!r}"
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 4000) -> Path:
    _run([f"--screenshot={png}", f"--window-size={width},{height}", page.resolve().as_uri()], png.parent / "profile")
    assert png.stat().st_size > 0
    return png
