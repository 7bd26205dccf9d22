"""Make docs/images/serve-page.png, the README's picture of the search page: the bundled samples indexed
with the built-in models, `mmsearch serve` on a free port, a query typed into headless chromium.

    python docs/screenshot.py [--query "a red circle"] [--out docs/images/serve-page.png]

Needs the server extra, selenium, and chromium + chromedriver (Debian: apt-get install chromium
chromium-driver). Runs offline.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--query", default="a red circle")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "serve-page.png")
    ap.add_argument("--size", default="1280,720")
    args = ap.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        sys.exit("needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")
    with tempfile.TemporaryDirectory(prefix="mmsearch-shot-") as tmp:
        store = Path(tmp) / "demo"
        mm = [sys.executable, "-m", "mmsearch"]
        subprocess.run([*mm, "index", str(ROOT / "samples" / "shapes"), str(ROOT / "samples" / "sounds"), "--store",
                        str(store), "--model", "builtin:shapes", "--model", "builtin:tones"], check=True,
                       stdout=subprocess.DEVNULL)
        port = free_port()
        server = subprocess.Popen([*mm, "serve", "--store", str(store), "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    urllib.request.urlopen(f"{base}/api/stats", timeout=5).close()
                    break
                except (urllib.error.URLError, OSError):
                    if server.poll() is not None or time.monotonic() > deadline:
                        sys.exit("mmsearch serve did not come up")
                    time.sleep(0.3)
            options = webdriver.ChromeOptions()
            options.binary_location = chromium
            for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                        f"--window-size={args.size}", "--hide-scrollbars"):
                options.add_argument(arg)
            driver = webdriver.Chrome(service=Service(driver_path), options=options)
            try:
                driver.get(base + "/")
                driver.find_element("id", "q").send_keys(args.query, Keys.ENTER)

                def loaded(d):
                    imgs = d.find_elements("css selector", "#results .hit .thumb img")
                    return imgs and all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
                                        for i in imgs)

                WebDriverWait(driver, 60).until(loaded)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(args.out))
            finally:
                driver.quit()
        finally:
            server.terminate()
            server.wait(30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
