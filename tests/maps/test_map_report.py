"""`perceptlite report --maps`: each card can show its quality map over its thumbnail, in a real headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from _dataset_fixtures import build_tiny_package, run_cli
from _runtime_fixtures import make_two_view_package
from PIL import Image

from perceptlite import Scorer

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
]


def chromium_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def mapped(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A report with maps of three photos (a dark band in each, so cells differ) and one broken file."""
    root = tmp_path_factory.mktemp("report")
    model = make_two_view_package(root / "model")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(5)
    for index in range(3):
        pixels = rng.integers(100, 256, (64, 96, 3), dtype=np.uint8)
        pixels[:, 16 * index : 16 * index + 16] //= 4
        Image.fromarray(pixels).save(images / f"photo{index}.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    output = root / "report.html"
    run = run_cli("report", images, "-m", model, "--maps", "-o", output, check=False)
    assert run.returncode == 1 and "3 images, 1 failed" in run.stderr
    return output, images, model


def test_maps_are_embedded_hidden_and_only_when_asked(mapped, tmp_path):
    output, images, model = mapped
    page = output.read_text(encoding="utf-8")
    assert page.count('<svg class="map" hidden') == 3 and page.count('class="map-toggle"') == 3
    plain = tmp_path / "plain.html"
    run_cli("report", images, "-m", model, "-o", plain, check=False)
    assert "map-toggle" not in plain.read_text(encoding="utf-8")
    no_crops = run_cli("report", images, "-m", build_tiny_package(tmp_path / "flat"), "--maps", "-o", tmp_path / "x.html", check=False)
    assert no_crops.returncode == 2 and "reads no native-resolution crops" in no_crops.stderr
    assert not (tmp_path / "x.html").exists()


@pytest.mark.browser
@pytest.mark.skipif(chromium_paths() is None, reason="Debian's chromium and chromium-driver are not installed")
def test_a_click_shows_and_hides_the_map_in_a_real_browser(mapped, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (test extra) is not installed")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    output, images, model = mapped
    browser, driver = chromium_paths()
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not try to download anything
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        session.get(output.as_uri())
        card = session.find_elements(By.CSS_SELECTOR, "#cards .card")[1]
        overlay = card.find_element(By.CSS_SELECTOR, "svg.map")
        image = card.find_element(By.CSS_SELECTOR, "img")
        session.execute_script("arguments[0].scrollIntoView()", image)
        session.execute_script("return arguments[0].decode()", image)
        assert not overlay.is_displayed()
        button = card.find_element(By.CSS_SELECTOR, "button.map-toggle")
        button.click()
        assert overlay.is_displayed() and button.get_attribute("aria-pressed") == "true"
        image_box, overlay_box = (
            session.execute_script("var r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.width, r.height];", e)
            for e in (image, overlay)
        )
        assert overlay_box == pytest.approx(image_box, abs=0.5)  # the map lies exactly over the photo
        shown = [float(g.get_attribute("data-iqa")) for g in overlay.find_elements(By.CSS_SELECTOR, "g")]
        name = re.sub(r"\s+", "", card.find_element(By.CSS_SELECTOR, ".name").text)
        expected = Scorer(model, device="cpu").quality_map(str(images / os.path.basename(name)))
        assert shown == pytest.approx([cell.iqa for cell in expected.cells], abs=0.01)
        assert min(shown) == pytest.approx(expected.values()[:, 1].min(), abs=0.01)  # photo1's dark band
        others = session.find_elements(By.CSS_SELECTOR, "svg.map")
        assert [other.is_displayed() for other in others].count(True) == 1  # only the clicked card's
        button.click()
        assert not overlay.is_displayed() and button.get_attribute("aria-pressed") == "false"
        assert [entry for entry in session.get_log("browser") if entry["level"] == "SEVERE"] == []
    finally:
        session.quit()
