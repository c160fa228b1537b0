"""The review site in a real headless Chromium: every group listed, every image loads, links resolve.

Talks to Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``: no port, no extra
dependency). Skips when ``/usr/bin/chromium`` is absent (``.ci/run`` installs Debian's package). The
index screenshot is saved to ``artifacts/site-index.png``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from PIL import Image, ImageDraw
from test_site import Library, make_library

from facecluster.catalog import Catalog
from facecluster.config import SiteConfig
from facecluster.migrations import now
from facecluster.site import build_site
from tests.fakes import insert_photo

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--remote-debugging-pipe",
]

# Runs in each page: load lazy images now, wait for them, report what the page shows.
PROBE = """
(async () => {
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = 'eager'; });
  const wait = i => i.complete ? null
    : new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); });
  await Promise.race([Promise.all(imgs.map(wait)), new Promise(r => setTimeout(r, 5000))]);
  return {
    images: imgs.map(i => [i.currentSrc || i.src, i.naturalWidth]),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    cards: [...document.querySelectorAll('.card')].map(c => c.id),
    photos: [...document.querySelectorAll('.photo img')].map(i =>
      [i.naturalWidth, i.naturalHeight, +i.getAttribute('width'), +i.getAttribute('height')]),
    styled: getComputedStyle(document.body).maxWidth,
  };
})()
"""


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe (fd 3 in, fd 4 out)."""

    def __init__(self, user_data: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def plumb() -> None:  # in the child: Chromium reads commands on fd 3 and answers on fd 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={user_data}", "about:blank"],
            preexec_fn=plumb,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 20
    ) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def load(self, url: str, session: str, timeout: float = 20) -> None:
        """Navigate and wait until that very document has finished loading (not a stale load event)."""
        self.send("Page.navigate", {"url": url}, session=session)
        check = "document.readyState === 'complete' ? location.href : ''"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self.send("Runtime.evaluate", {"expression": check, "returnByValue": True}, session=session)
            if reply["result"].get("value") == url:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{url} did not finish loading")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def _add_rotated_and_tiff_photos(library: Library) -> dict[str, int]:
    """A JPEG stored sideways (EXIF orientation 6) and a TIFF (no browser shows it: a preview is made)."""
    rotated = library.photos["ada1"].parent / "sideways.jpg"
    image = Image.new("RGB", (240, 160), (30, 90, 60))
    ImageDraw.Draw(image).rectangle((150, 20, 220, 80), fill=(230, 190, 160))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(rotated, "JPEG", exif=exif.tobytes())
    tiff = rotated.with_name("scan.tif")
    Image.new("RGB", (200, 150), (120, 40, 40)).save(tiff, "TIFF")
    ids = {}
    with Catalog.open(library.db) as catalog:
        for key, path, (w, h), box in (
            ("rotated", rotated, (160, 240), (80, 150, 140, 220)),
            ("tiff", tiff, (200, 150), (20, 20, 80, 90)),
        ):
            t = now()
            ids[key] = insert_photo(catalog.db, path, hash=key, width=w, height=h)
            catalog.db["faces"].insert(
                {
                    "photo_id": ids[key],
                    "x1": box[0],
                    "y1": box[1],
                    "x2": box[2],
                    "y2": box[3],
                    "probability": 0.99,
                    "crop": None,
                    "cluster_id": None,
                    "ignored": 0,
                    "created_at": t,
                }
            )
        catalog.db.conn.commit()
    return ids


def _local(url: str) -> Path | None:
    parsed = urlparse(url)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium)")
def test_site_in_headless_chromium(tmp_path: Path) -> None:
    library = make_library(tmp_path)
    extra = _add_rotated_and_tiff_photos(library)
    out = tmp_path / "site"
    with Catalog.open(library.db) as catalog:
        summary = build_site(catalog, out, config=SiteConfig(faces_per_page=3))
        cluster_ids = [
            r[0] for r in catalog.db.execute("SELECT DISTINCT cluster_id FROM faces WHERE cluster_id IS NOT NULL")
        ]
    pages = sorted(out.rglob("*.html"))
    browser = DevTools(tmp_path / "chromium-profile")
    requests: list[str] = []
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Page.enable", "Network.enable", "Runtime.enable"):
            browser.send(method, session=session)
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        results = {}
        for page in pages:
            browser.load(page.as_uri(), session)
            value = browser.send(
                "Runtime.evaluate", {"expression": PROBE, "awaitPromise": True, "returnByValue": True}, session=session
            )["result"]["value"]
            results[page] = value
            if page == out / "index.html":
                # Load the index afresh so the screenshot shows it as a user first sees it (lazy images in view).
                browser.load("about:blank", session)
                browser.load(page.as_uri(), session)
                browser.send("Runtime.evaluate", {"expression": PROBE, "awaitPromise": True}, session=session)
                shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
                ARTIFACTS.mkdir(exist_ok=True)
                png = ARTIFACTS / "site-index.png"
                png.write_bytes(base64.b64decode(shot["data"]))
                print(f"screenshot of the index: {png}")
        requests = [
            e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"
        ]
    finally:
        browser.close()

    index = results[out / "index.html"]
    # The index lists every person and cluster.
    expected = {f"person-{pid}" for pid in library.people.values()} | {
        f"cluster-{cid}" for cid in cluster_ids if cid not in (library.clusters["A"], library.clusters["B"])
    }
    assert expected | {"unclustered"} == set(index["cards"])
    n_images = 0
    for page, value in results.items():
        assert value["styled"] == "1400px", f"{page}: style.css did not apply"
        for src, width in value["images"]:
            assert width > 0, f"{page}: broken image {src}"
            n_images += 1
        for href in value["links"]:
            path = _local(href)
            assert path is not None, f"{page}: non-local link {href}"
            assert path.exists(), f"{page}: link to a missing file {href}"
            fragment = urlparse(href).fragment
            if fragment:
                assert f'id="{fragment}"' in path.read_text(), f"{page}: {href} has no #{fragment}"
    # The face boxes are drawn in the photo's oriented pixels: the browser must show it the same size.
    for page, value in results.items():
        for natural_w, natural_h, width, height in value["photos"]:
            assert (natural_w, natural_h) == (width, height), page
    rotated = results[out / f"photos/0/{extra['rotated']}.html"]["photos"]
    assert rotated == [[160, 240, 160, 240]]  # stored 240x160 with EXIF orientation 6
    tiff = results[out / f"photos/0/{extra['tiff']}.html"]["images"][0][0]
    assert "/previews/" in tiff and summary.previews_made == 1
    assert n_images >= summary.faces * 2  # each face on its sheet and its photo page, plus photos and index
    # Nothing left the machine: every request was for a local file.
    assert requests and all(re.match(r"(file|data|about):", url) for url in requests), requests
