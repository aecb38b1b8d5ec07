"""Test helper: load a page in a real headless Chromium (Debian's, through playwright)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path


@dataclasses.dataclass
class PageCheck:
    """What the browser saw: console errors, each image's natural width, the section ids."""

    errors: list[str]
    image_widths: dict[str, int]
    sections: list[str]


def load_page(path: Path, screenshot: Path) -> PageCheck:
    """Opens `path` in headless Chromium, records errors and images, writes a full-page
    screenshot to `screenshot`.

    Raises:
      RuntimeError: no `chromium` on PATH (scripts/in-env installs Debian's).
    """
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        raise RuntimeError("no chromium on PATH; run the tests through scripts/in-env")
    errors: list[str] = []
    with sync_playwright() as playwright:
        # --no-sandbox: the environment's user namespace (bubblewrap) has no room for
        # Chromium's own sandbox; the page is a local file this run wrote.
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            # Only file:// is allowed: a self-contained page fetches nothing.
            page.route(
                "**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort()
            )
            page.goto(path.resolve().as_uri(), wait_until="load")
            widths = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => [i.alt, i.complete ? i.naturalWidth : 0])"
            )
            sections = page.eval_on_selector_all("section", "s => s.map(e => e.id)")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return PageCheck(errors, dict(widths), sections)
