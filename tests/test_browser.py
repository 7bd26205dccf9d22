"""The search page in a real browser (Debian chromium + chromedriver, driven by selenium), against a real
`mmsearch serve` with a token: open the printed URL, type a query, see the result thumbnails, click
"similar", upload an image. Skipped, saying why, where chromium, chromedriver or selenium is missing
(`make test` with CI=true tries to install them)."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
from tests.kit import samples_store, serving  # noqa: E402

TOKEN = "browser-test-token-0123456789"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    root = tmp_path_factory.mktemp("browser")
    store, images, _ = samples_store(root, images=10, sounds=0)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    with serving(store, "--token", TOKEN, log=root / "serve.log") as base:
        driver = webdriver.Chrome(service=Service(DRIVER), options=options)
        driver.set_page_load_timeout(30)
        try:
            yield driver, base, images
        finally:
            driver.quit()


def _results(driver, timeout: float = 30):
    """Once the page shows results whose thumbnails have loaded: (status line, cards, image sources)."""
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        imgs = d.find_elements("css selector", "#results .hit .thumb img")
        loaded = [i for i in imgs if d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)]
        return loaded if imgs and len(loaded) == len(imgs) else False

    imgs = WebDriverWait(driver, timeout).until(shown)
    return (driver.find_element("id", "status").text, driver.find_elements("css selector", "#results .hit"),
            [i.get_attribute("src") for i in imgs])


def test_the_page_searches_shows_thumbnails_finds_similar_and_takes_an_upload(page):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver, base, images = page
    driver.get(f"{base}/?token={TOKEN}")  # the URL `mmsearch serve` prints: sets the cookie, drops the token
    WebDriverWait(driver, 15).until(lambda d: d.find_element("id", "store").text)
    assert "token" not in driver.current_url
    assert "10 images" in driver.find_element("id", "store").text

    colour, shape = next(p.stem.split("_")[:2] for p in images if len(p.stem.split("_")) == 3)  # e.g. cyan_cross_038
    box = driver.find_element("id", "q")
    box.send_keys(f"a {colour} {shape}", Keys.ENTER)
    status, cards, srcs = _results(driver)
    assert "results for" in status and f"a {colour} {shape}" in status and len(cards) == 10
    assert all("/api/thumb/" in s for s in srcs)
    first = cards[0].find_element("css selector", ".path").text
    assert colour in first and shape in first  # the built-in model knows its shapes

    cards[1].find_element("xpath", ".//button[text()='similar']").click()
    want = cards[1].find_element("css selector", ".path").text
    WebDriverWait(driver, 30).until(lambda d: f"results for {want}" in d.find_element("id", "status").text)
    _, cards, _ = _results(driver)
    assert cards[0].find_element("css selector", ".path").text == want  # an image is most like itself

    upload = driver.find_element("id", "file")
    driver.execute_script("arguments[0].style.display = 'block'", upload)  # the label hides the input
    upload.send_keys(str(images[4]))
    WebDriverWait(driver, 30).until(lambda d: f"results for {images[4].name}" in d.find_element("id", "status").text)
    _, cards, _ = _results(driver)
    assert cards[0].find_element("css selector", ".path").text == images[4].name
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors  # nothing failed to load (no missing file, nothing the CSP refused)
    loaded = driver.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert loaded and all(u.startswith((base, "blob:", "data:")) for u in loaded), loaded  # no network beyond the server


def test_without_the_token_the_page_says_what_to_do(page):
    driver, base, _ = page
    driver.delete_all_cookies()
    driver.get(f"{base}/")
    assert "requires a token" in driver.find_element("tag name", "body").text
