"""The search page in a real browser (Debian chromium + chromedriver, driven by selenium), against a real
`mmsearch serve` with a token: open the printed URL, type a query, see the result thumbnails, click
"similar", upload an image; a combined query, a filter that narrows, "more like this" then "less like
this" (each answer the API's for the same query), an error shown as text, the duplicates view; a video hit
played from its moment, a moment chip seeking the <video> there. Skipped, saying why, where chromium, chromedriver or selenium is missing
(`make test` with CI=true tries to install them)."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
from tests.kit import samples_store, serving, videos_store  # noqa: E402

TOKEN = "browser-test-token-0123456789"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")


def _chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,900", "--no-first-run", "--disable-extensions", "--mute-audio",
                "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    store, images, _ = samples_store(root, images=10, sounds=0)
    with serving(store, "--token", TOKEN, log=root / "serve.log") as base:
        driver = _chromium()
        try:
            yield driver, base, images
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def video_page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-videos")
    store, _, _ = videos_store(root)
    with serving(store, "--token", TOKEN, log=root / "serve.log") as base:
        driver = _chromium()
        try:
            yield driver, base
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

    want = cards[1].find_element("css selector", ".path").text  # before the click: the results it brings replace this card
    cards[1].find_element("xpath", ".//button[text()='similar']").click()
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


def _api(driver, url: str):
    """What the page's own API answers (with the page's cookie) for ``url``."""
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then((r) => r.json()).then(done, (e) => done(String(e)));", url)


def _paths(cards) -> list[str]:
    return [c.find_element("css selector", ".path").text for c in cards]


def _names(hits) -> list[str]:
    return [h["path"].rsplit("/", 1)[-1] for h in hits]


def _status(driver, text: str, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: text in d.find_element("id", "status").text)


def test_the_page_combines_filters_examples_and_shows_duplicates(page):
    from urllib.parse import urlencode

    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver, base, images = page
    driver.get_log("browser")  # what earlier tests left (a 401 without the token)
    driver.get(f"{base}/?token={TOKEN}")
    WebDriverWait(driver, 15).until(lambda d: d.find_element("id", "store").text)
    q = "a blue square + a green circle"  # a combined query, as the engine reads it
    box = driver.find_element("id", "q")
    box.clear()
    box.send_keys(q, Keys.ENTER)
    _status(driver, f"results for “{q}”")
    _, cards, _ = _results(driver)
    hits = _api(driver, "/api/search?" + urlencode({"q": q, "k": 20}))
    assert _paths(cards) == _names(hits)
    shown = [c.find_element("css selector", ".score").text for c in cards]
    assert shown == [f"{h['calibrated']:+.2f}" for h in hits]  # the calibrated score, as `mmsearch query` shows

    where = driver.find_element("id", "path")  # a filter that narrows: only the blue ones
    where.send_keys("*/blue_*", Keys.ENTER)
    WebDriverWait(driver, 30).until(lambda d: len(d.find_elements("css selector", "#results .hit")) < len(cards))
    _, narrowed, _ = _results(driver)
    assert narrowed and all(p.startswith("blue_") for p in _paths(narrowed))
    assert len(narrowed) == len([p for p in images if p.name.startswith("blue_")])
    where.clear()
    where.send_keys(Keys.ENTER)
    WebDriverWait(driver, 30).until(lambda d: len(d.find_elements("css selector", "#results .hit")) == len(cards))

    _, cards, _ = _results(driver)
    liked, liked_id = _paths(cards)[3], _api(driver, "/api/search?" + urlencode({"q": q, "k": 20}))[3]["id"]
    cards[3].find_element("xpath", ".//button[text()='more like this']").click()
    _status(driver, f"like {liked}")
    chips = driver.find_elements("css selector", "#chips .chip")
    assert [c.text.rstrip("×").strip() for c in chips] == [f"like: {liked}"]
    _, cards, _ = _results(driver)
    want = _api(driver, "/api/search?" + urlencode({"q": q, "k": 20, "like": liked_id}))
    assert _paths(cards) == _names(want)
    unliked, unliked_id = _paths(cards)[1], want[1]["id"]
    cards[1].find_element("xpath", ".//button[text()='less like this']").click()
    _status(driver, f"unlike {unliked}")
    _, cards, _ = _results(driver)
    want = _api(driver, "/api/search?" + urlencode([("q", q), ("k", 20), ("like", liked_id), ("unlike", unliked_id)]))
    assert _paths(cards) == _names(want) and len(driver.find_elements("css selector", "#chips .chip")) == 2
    driver.find_element("css selector", "#chips .chip.like button").click()  # remove the liked chip
    WebDriverWait(driver, 30).until(lambda d: len(d.find_elements("css selector", "#chips .chip")) == 1)

    bad = driver.find_element("id", "where")  # an error is shown as text, naming the term
    bad.send_keys("widht>=3", Keys.ENTER)
    WebDriverWait(driver, 30).until(lambda d: d.find_element("id", "status").get_attribute("class") == "error")
    assert "widht" in driver.find_element("id", "status").text
    bad.clear()

    threshold = driver.find_element("id", "threshold")
    threshold.clear()
    threshold.send_keys("0.5")
    driver.find_element("id", "dupsbtn").click()
    _status(driver, "groups of duplicates")
    want = _api(driver, "/api/dups?threshold=0.5")
    groups = driver.find_elements("css selector", "#results .dup")
    assert want and len(groups) == len(want)
    thumbs = WebDriverWait(driver, 30).until(lambda d: [
        i for i in d.find_elements("css selector", "#results .dup img")
        if d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)] or False)
    assert len(thumbs) == sum(len(c["members"]) for c in want)
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE" and "status of 422" not in e["message"]]
    assert not errors, errors  # nothing failed but the bad filter's answer


def _current_time(driver, video) -> float:
    return float(driver.execute_script("return arguments[0].currentTime", video))


def test_a_video_hit_plays_from_its_moment_and_a_chip_seeks_there(video_page):
    from selenium.webdriver.support.ui import WebDriverWait

    driver, base = video_page
    driver.get(f"{base}/?token={TOKEN}&type=video&q=a%20rising%20whistle")
    WebDriverWait(driver, 30).until(lambda d: d.find_elements("css selector", "#results .hit video"))
    hit = _api(driver, f"{base}/api/search?q=a%20rising%20whistle&type=video&k=20&moments=3&pooling=peak")[0]
    card = driver.find_elements("css selector", "#results .hit")[0]
    video = card.find_element("css selector", "video")
    assert f"/api/thumb/{hit['id']}" in video.get_attribute("poster")
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(  # the poster: the frame at the best moment
        "const i = new Image(); i.src = arguments[0].poster; return i.complete && i.naturalWidth > 0", video))
    chips = card.find_elements("css selector", "button.moment")
    assert [c.text for c in chips] == [f"{_clock(m['start'])}–{_clock(m['end'])} · {m['evidence']}"
                                      for m in hit["moments"]]
    chips[0].click()  # plays from the best moment's start
    start = hit["moments"][0]["start"]
    WebDriverWait(driver, 30).until(lambda d: _current_time(d, video) >= start - 0.05)
    assert _current_time(driver, video) < start + 2.5
    if len(chips) > 1:
        chips[-1].click()
        other = hit["moments"][-1]["start"]
        WebDriverWait(driver, 30).until(lambda d: abs(_current_time(d, video) - other) < 1.5)
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors


def _clock(t: float) -> str:
    s = int(t)
    return f"{s // 60}:{s % 60:02d}"
