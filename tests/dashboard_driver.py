"""Driving the dashboard in a real headless Chromium (Debian's chromium + chromedriver,
through Selenium) for tests/test_dashboard.py and for taking screenshots by hand.

Selenium is given both paths, so it never runs Selenium Manager (no driver download).
``ensure_browser()`` runs dashboard/install-test-deps.sh when something is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INSTALLER = ROOT / "dashboard" / "install-test-deps.sh"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROME_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps",
    "--disable-extensions", "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows",
    "--force-device-scale-factor=1", "--hide-scrollbars", "--mute-audio",
    # The wss:// test broker has a throwaway self-signed certificate.
    "--ignore-certificate-errors",
]


def _missing() -> list[str]:
    out = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        out.append("selenium")
    return out


def ensure_browser() -> str | None:
    """Install what is missing (idempotent); None when ready, else why it cannot run."""
    if not _missing():
        return None
    proc = subprocess.run(["bash", str(INSTALLER), sys.executable], capture_output=True,
                          text=True, timeout=900)
    still = _missing()
    if still:
        return (f"cannot run the browser tests, missing {', '.join(still)} after "
                f"{INSTALLER.name}: {(proc.stderr or proc.stdout).strip()[-400:]}")
    return None


class Browser:
    """One headless Chromium with helpers to wait on page state."""

    def __init__(self, width: int = 1400, height: int = 1050, log_dir: Path | None = None) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = Path(tempfile.mkdtemp(prefix="mmme-chromium-"))
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for f in CHROME_FLAGS:
            opts.add_argument(f)
        opts.add_argument(f"--user-data-dir={self.profile}")
        opts.add_argument(f"--window-size={width},{height}")
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        log = str(log_dir / "chromedriver.log") if log_dir else subprocess.DEVNULL
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=log),
                                       options=opts)
        self.driver.set_script_timeout(30)
        self.driver.set_page_load_timeout(30)

    # -- page ---------------------------------------------------------------------------
    def open(self, url: str, timeout_s: float = 20.0) -> None:
        self.driver.get(url)
        self.wait(lambda: self.js("return !!(window.mmmeDashboard && mmmeDashboard.ready)"),
                  timeout_s, "dashboard did not load its schemas")

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, cond: Callable[[], Any], timeout_s: float = 15.0, what: str = "") -> Any:
        """Poll ``cond`` until truthy; raise with ``what`` and the page's state if not."""
        deadline = time.monotonic() + timeout_s
        last_exc: Exception | None = None
        while True:
            try:
                got = cond()
                if got:
                    return got
            except Exception as exc:  # a stale element while the page re-renders
                last_exc = exc
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s: {what} "
                                     f"(last error: {last_exc}; page: {self.summary()})")
            time.sleep(0.1)

    def css(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    # Looked up and read in one script: an element found by one call and read by the next
    # can be replaced by a re-render in between (StaleElementReferenceException).
    def text(self, selector: str) -> str:
        return str(self.js("const e = document.querySelector(arguments[0]);"
                           " return e ? e.innerText : '';", selector))

    def attr(self, selector: str, name: str) -> str | None:
        return self.js("const e = document.querySelector(arguments[0]);"
                       " return e ? e.getAttribute(arguments[1]) : null;", selector, name)

    def click(self, selector: str) -> None:
        self.wait(lambda: (e := self.css(selector)) and e[0].is_enabled() and e[0].is_displayed(),
                  10, f"{selector} clickable")
        self.css(selector)[0].click()

    def stats(self) -> dict[str, Any]:
        return dict(self.js("return mmmeDashboard.stats()"))

    def summary(self) -> str:
        try:
            return json.dumps(self.js(
                "return {conn: mmmeDashboard.conn(), rigs: mmmeDashboard.rigIds(),"
                " errors: mmmeDashboard.errors().map(e => e.topic + ': ' + e.reason)}"))[:1500]
        except Exception as exc:
            return f"<no page state: {exc}>"

    def console(self) -> list[str]:
        try:
            return [f"{e['level']} {e['message']}" for e in self.driver.get_log("browser")]
        except Exception:
            return []

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
