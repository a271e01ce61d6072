"""The web page against local mode's endpoint, in a real headless Chromium, with a model the tests
trained (tests/conftest.py: trained_model_dir, local_endpoint): real photos in, the model's answers read
back from the page, every failure shown as a sentence, and a screenshot left in test-artifacts/web/."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import imgclf_page
import pytest
from PIL import Image

from imgclf import contract
from localmode.supervisor import start_background

NOT_AN_IMAGE = "This file is not a photo your browser can open."
UNREACHABLE = "The classifier cannot be reached."
EXIF_ORIENTATION = 0x0112  # TIFF tag 274; 6 = "rotate 90° clockwise to display", what phones write


def _encode(image: Image.Image, image_format: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return buffer.getvalue()


def _open(new_page: Any, url: str, **options: Any) -> tuple[Any, list[str]]:
    page, problems = new_page(**options)
    page.goto(f"{url}/")
    return page, problems


def _classify(page: Any, path: Path) -> tuple[Any, bytes]:
    """Choose the file like a person does; return the response to the page's POST and the bytes it sent
    (read on the way: the request still goes to the endpoint unchanged)."""
    sent: list[bytes] = []

    def record(route: Any) -> None:
        sent.append(route.request.post_data_buffer or b"")
        route.continue_()

    page.route(lambda url: True, lambda route: record(route) if route.request.method == "POST" else route.continue_())
    with page.expect_response(lambda response: response.request.method == "POST") as answered:
        page.get_by_label("Choose a photo").set_input_files(str(path))
    page.locator("#predictions li").first.wait_for()
    page.unroute_all()
    [body] = sent
    return answered.value, body


def _shown(page: Any) -> list[tuple[str, str, str]]:
    """(raw label, shown label, shown percentage) of every row of the page's table."""
    return page.locator("#predictions li").evaluate_all(
        "items => items.map(i => [i.dataset.label, i.querySelector('.label').textContent,"
        " i.querySelector('.pct').textContent])")


def test_the_endpoint_serves_the_page_as_the_function_url_does(local_endpoint, class_image):
    jpeg_bytes = _encode(class_image(2, (90, 70)), "JPEG")
    page = httpx.get(f"{local_endpoint.url}/")
    assert page.status_code == 200
    assert page.content == imgclf_page.HTML.encode("utf-8")
    for name, value in imgclf_page.HEADERS.items():
        assert page.headers[name] == value
    # Where the page posts: the same answer as the container protocol's /invocations.
    posted = httpx.post(f"{local_endpoint.url}/", content=jpeg_bytes, headers={"Content-Type": "image/jpeg"})
    direct = httpx.post(f"{local_endpoint.url}/invocations", content=jpeg_bytes,
                        headers={"Content-Type": "image/jpeg"})
    assert posted.status_code == direct.status_code == 200
    assert posted.json() == direct.json()
    assert len(posted.json()["predictions"]) == min(contract.DEFAULT_TOP_K, 3)


def test_a_phone_jpeg_is_classified_and_shown(local_endpoint, new_page, class_image, model_classes, tmp_path,
                                              artifacts_dir):
    # A blue photo as a phone stores it: 300x200 pixels plus "display rotated 90°".
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    photo = tmp_path / "IMG_0001.jpg"
    photo.write_bytes(_encode(class_image(2, (300, 200), seed=3), "JPEG", quality=92, exif=exif))

    page, problems = _open(new_page, local_endpoint.url, viewport={"width": 900, "height": 720})
    response, sent = _classify(page, photo)
    answer = response.json()

    shown = _shown(page)
    assert [row[0] for row in shown] == [p["label"] for p in answer["predictions"]]
    assert [row[1] for row in shown] == [p["label"].replace("_", " ") for p in answer["predictions"]]
    assert [row[2] for row in shown] == [f"{100 * p['probability']:.1f}%" for p in answer["predictions"]]
    assert sorted(row[0] for row in shown) == sorted(model_classes)  # all 3 classes (top-5 of 3)
    assert shown[0][0] == model_classes[2]  # it is the blue class
    assert page.locator("#runtime").text_content() == answer["runtime"]
    assert page.locator("#latency").text_content().endswith(" ms")
    assert page.get_by_role("status").text_content().startswith(f"Best guess: {shown[0][1]}")

    # What was sent: the photo upright (EXIF applied), as a JPEG, and the model's answer for exactly it.
    with Image.open(io.BytesIO(sent)) as image:
        assert (image.format, image.size) == ("JPEG", (200, 300))
    assert page.locator("#sent").text_content().startswith("200 × 300 px JPEG")
    direct = httpx.post(f"{local_endpoint.url}/invocations", content=sent, headers={"Content-Type": "image/jpeg"})
    assert direct.json()["predictions"] == answer["predictions"]
    assert problems == []

    (artifacts_dir / "web").mkdir(exist_ok=True)
    page.screenshot(path=str(artifacts_dir / "web" / "page-local.png"), full_page=True)


def test_a_large_png_is_scaled_down_in_the_browser(local_endpoint, new_page, class_image, model_classes, tmp_path):
    big = tmp_path / "scan.png"
    big.write_bytes(_encode(class_image(0, (2400, 1600), seed=4), "PNG", compress_level=1))
    assert big.stat().st_size > contract.MAX_IMAGE_BYTES  # as sent, every entry point would refuse it (413)

    page, problems = _open(new_page, local_endpoint.url)
    response, sent = _classify(page, big)
    assert response.status == 200
    with Image.open(io.BytesIO(sent)) as image:
        assert (image.format, image.size) == ("JPEG", (1024, 683))
    assert page.locator("#sent").text_content().startswith("1024 × 683 px JPEG")
    assert _shown(page)[0][0] == model_classes[0]  # the red class
    assert problems == []


def test_a_file_that_is_not_an_image_gets_a_message(local_endpoint, new_page, tmp_path):
    notes = tmp_path / "notes.jpg"
    notes.write_text("these are my notes, not a photo\n")
    page, problems = _open(new_page, local_endpoint.url)
    posts: list[Any] = []
    page.on("request", lambda request: posts.append(request) if request.method == "POST" else None)
    page.get_by_label("Choose a photo").set_input_files(str(notes))
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert alert.inner_text().startswith(NOT_AN_IMAGE)
    assert posts == []  # refused in the browser: nothing was sent
    assert page.locator("#result").is_hidden()
    assert problems == []


def test_an_endpoint_that_is_down_gets_a_message(trained_model_dir, new_page, class_image, tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(_encode(class_image(1, (120, 90)), "JPEG"))
    server = start_background(trained_model_dir, workers=1, threads=1)
    try:
        page, _ = _open(new_page, server.url)
    finally:
        assert server.stop() == 0
    page.get_by_label("Choose a photo").set_input_files(str(photo))
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert alert.inner_text().startswith(UNREACHABLE)
    # A person can try again: the pickers are enabled again.
    assert page.get_by_label("Choose a photo").is_enabled()


def test_keyboard_labels_and_phone_capture(local_endpoint, new_page):
    page, problems = _open(new_page, local_endpoint.url)
    assert page.locator("html").get_attribute("lang") == "en"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "photo-file"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "photo-camera"
    # A visible focus ring on the focused control.
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    camera = page.get_by_label("Take a photo")
    assert (camera.get_attribute("capture"), camera.get_attribute("accept")) == ("environment", "image/*")
    assert page.get_by_label("Choose a photo").get_attribute("accept") == "image/*"
    assert page.get_by_role("status").count() == 1
    assert problems == []


_CONTRAST = """() => {
  const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = (c) => {
    const v = rgb(c).map((x) => { x /= 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2];
  };
  const ratio = (a, b) => {
    const [l1, l2] = [lum(a), lum(b)].sort((x, y) => y - x);
    return (l1 + 0.05) / (l2 + 0.05);
  };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = getComputedStyle(el).backgroundColor;
      if (!/rgba\\(.*, 0\\)$/.test(c) && c !== "transparent") return c;
    }
    return "rgb(255, 255, 255)";
  };
  const text = (sel) => {
    const el = document.querySelector(sel);
    return ratio(getComputedStyle(el).color, background(el));
  };
  const button = getComputedStyle(document.querySelector("#photo-file"), "::file-selector-button");
  const bar = document.querySelector("#predictions .bar span");
  return {
    heading: text("h1"), lead: text(".lead"), hint: text(".hint"), label: text(".picker label"),
    button: ratio(button.color, button.backgroundColor),
    error: text("#error-message"), result: text("#predictions .label"), facts: text(".facts dt"),
    bar: ratio(getComputedStyle(bar).backgroundColor, getComputedStyle(bar.parentElement).backgroundColor),
  };
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_contrast_meets_wcag_aa(local_endpoint, new_page, class_image, tmp_path, scheme):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(_encode(class_image(1, (120, 90)), "JPEG"))
    page, _ = _open(new_page, local_endpoint.url, color_scheme=scheme)
    _classify(page, photo)
    page.evaluate("document.getElementById('error').hidden = false")  # measure the error box too
    page.evaluate("document.getElementById('error-message').textContent = 'x'")
    ratios = page.evaluate(_CONTRAST)
    # WCAG 2.1 AA: 4.5:1 for text, 3:1 for the bars (non-text contrast).
    assert {name: value for name, value in ratios.items() if value < (3.0 if name == "bar" else 4.5)} == {}
