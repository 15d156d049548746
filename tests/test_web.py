"""The web page at /, in real headless Chromium (Debian's package, driven by Playwright; never a download)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
from conftest import start_server

pytestmark = pytest.mark.slow  # a real browser

CHROMIUM = os.environ.get("SIGNS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM}: `apt-get install chromium` (make test does) or set SIGNS_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def test_upload_a_photo_and_see_digit_bars_and_model_input(browser, server, sample_jpg, tmp_path):
    expected = httpx.post(f"{server.url}/predict", files={"image": sample_jpg.read_bytes()}, timeout=30).json()
    page = browser.new_page(viewport={"width": 800, "height": 640})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + "/")
    assert page.title() == "SIGNS hand-sign classifier"
    page.set_input_files("#file", str(sample_jpg))
    page.wait_for_selector("#result.shown", timeout=30_000)

    assert page.inner_text("#digit") == expected["results"][0]["label"]
    bars = page.locator("#bars .bar")
    assert bars.count() == 6
    assert [bars.nth(i).get_attribute("data-label") for i in range(6)] == list("012345")
    shown = {bars.nth(i).get_attribute("data-label"): bars.nth(i).locator(".value").inner_text() for i in range(6)}
    for prediction in expected["predictions"]:
        assert shown[prediction["label"]] == f"{prediction['probability'] * 100:.1f}%"
    page.wait_for_function("document.getElementById('model-input').naturalWidth > 0")
    assert page.evaluate("[document.getElementById('model-input').naturalWidth, "
                         "document.getElementById('model-input').naturalHeight]") == [64, 64]
    assert page.get_attribute("#file", "accept") == "image/*"
    assert page.get_attribute("#camera", "capture") is not None  # a phone opens its camera
    page.wait_for_timeout(400)  # let the bars finish growing
    best = page.locator("#bars .bar.best")
    assert best.get_attribute("data-label") == expected["results"][0]["label"]
    track, fill = best.locator(".track").bounding_box(), best.locator(".fill").bounding_box()
    assert fill["width"] == pytest.approx(track["width"] * expected["results"][0]["probability"], abs=2)
    screenshot = Path(os.environ.get("SIGNS_SCREENSHOT") or tmp_path / "screenshot.png")
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    assert not errors, errors


def test_a_file_that_is_not_an_image_shows_the_error(browser, server, tmp_path):
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    page = browser.new_page()
    page.goto(server.url + "/")
    page.set_input_files("#file", str(not_an_image))
    page.wait_for_selector("#status.error", timeout=30_000)
    assert "not a readable image" in page.inner_text("#status")
    assert not page.is_visible("#result")


def test_on_a_server_with_an_api_key_the_page_asks_for_it(browser, model_file, sample_jpg, tmp_path):
    key = "web-test-key"
    server = start_server(model_file, tmp_path / "server.log", "--engine", "torch-fp32", "--max-batch-size", "4",
                          env={"SIGNS_API_KEY": key})
    try:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url + "/")
        assert not page.is_visible("#key-form")
        page.set_input_files("#file", str(sample_jpg))
        page.wait_for_selector("#key-form", state="visible", timeout=30_000)
        assert "needs an API key" in page.inner_text("#status")
        assert page.get_attribute("#api-key", "type") == "password"

        page.fill("#api-key", "wrong")
        page.click("#key-form button")
        page.wait_for_function("document.getElementById('status').textContent.includes('refused')")
        assert page.is_visible("#key-form") and not page.is_visible("#result")

        page.fill("#api-key", key)
        page.click("#key-form button")
        page.wait_for_selector("#result.shown", timeout=30_000)
        assert page.inner_text("#digit") in list("012345")
        assert not page.is_visible("#key-form")
        assert not errors, errors
    finally:
        server.stop()


def test_api_docs_work_offline_and_show_the_predict_operation(browser, server):
    """/docs with every request to another host refused: Swagger UI comes from the server itself."""
    page = browser.new_page()
    elsewhere: list[str] = []
    errors: list[str] = []

    def only_the_server(route) -> None:
        if route.request.url.startswith(server.url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + "/docs")
    operation = page.locator(".opblock-post .opblock-summary-path[data-path='/predict']")
    operation.wait_for(timeout=30_000)
    operation.click()  # expands: the multipart upload field is documented
    page.wait_for_selector(".opblock-post.is-open .parameters-col_description", timeout=30_000)
    assert "image" in page.locator(".opblock-post.is-open").inner_text()
    assert page.locator(".opblock-summary-path[data-path='/v2/models/{model_name}/infer']").count() == 1
    assert elsewhere == [] and errors == [], (elsewhere, errors)
