"""`perceptlite report`: a self-contained HTML page, checked as text and in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from _dataset_fixtures import build_tiny_package, make_images, run_cli

HOSTILE = "<img src=x onerror=alert(1)>&amp;.png"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A report of 14 images (one with an HTML-like name) and one broken file."""
    root = tmp_path_factory.mktemp("report")
    model = build_tiny_package(root / "model")
    images = root / "images"
    make_images(images, 13, size=40)
    make_images(root / "raw", 1, start=50, subfolders=0)[0].replace(images / HOSTILE)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    scores = root / "scores.jsonl"
    run_cli("score", images, "-m", model, "--jsonl", "-o", scores, check=False)
    records = [json.loads(line) for line in scores.read_text(encoding="utf-8").splitlines()]
    output = root / "report.html"
    run = run_cli("report", images, "-m", model, "-o", output, check=False)
    assert run.returncode == 1 and "14 images, 1 failed" in run.stderr  # 1: some files failed (issue 13)
    from_scores = root / "from-scores.html"
    assert run_cli("report", "--from-scores", scores, "-o", from_scores, check=False).returncode == 1
    cards = re.compile(r'data-name="([^"]*)"')
    assert cards.findall(from_scores.read_text(encoding="utf-8")) == cards.findall(output.read_text(encoding="utf-8"))
    return output, records


def test_report_is_self_contained_and_escaped(report):
    output, records = report
    page = output.read_text(encoding="utf-8")
    assert page.count('class="card"') == 14
    assert page.count("data:image/jpeg;base64,") >= 14
    assert re.search(r"""(src|href)=["']?(https?:|//)""", page) is None  # nothing is fetched
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&amp;amp;.png" in page
    assert page.count('<svg class="histogram"') == 3
    assert "broken.jpg" in page.split('id="failures"')[1]
    failed = next(r for r in records if r["error"])
    assert failed["error"].split(" (")[0] in page


def chromium_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.browser
@pytest.mark.skipif(
    chromium_paths() is None, reason="Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
)
def test_report_in_a_real_browser(report, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (test extra) is not installed")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    output, records = report
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
        assert session.title == "perceptlite report"
        errors = [entry for entry in session.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []

        cards = session.find_elements(By.CSS_SELECTOR, "#cards .card")
        scored = [r for r in records if r["error"] is None]
        assert len(cards) == len(scored) == 14
        names = [card.find_element(By.CSS_SELECTOR, ".name").text for card in cards]
        assert any(HOSTILE in name for name in names)  # shown as text, not run as markup
        first = session.find_element(By.CSS_SELECTOR, "#cards .card img")  # in view: decoded (others load lazily)
        session.execute_script("arguments[0].scrollIntoView()", first)
        assert session.execute_script("return arguments[0].decode().then(() => arguments[0].naturalWidth)", first) > 0

        def order(axis: str) -> list[float]:
            return [float(card.get_attribute(f"data-{axis}")) for card in session.find_elements(By.CSS_SELECTOR, "#cards .card")]

        initial = order("iaa")
        for axis in ("iaa", "iqa", "ista"):
            session.find_element(By.CSS_SELECTOR, f'button[data-sort="{axis}"]').click()
            values = order(axis)
            assert values == sorted(values, reverse=True), axis
            session.find_element(By.CSS_SELECTOR, f'button[data-sort="{axis}"]').click()
            assert order(axis) == sorted(values)
        assert order("iaa") != initial or initial == sorted(initial)
        expected_best = max(r["iaa"] for r in scored)
        session.find_element(By.CSS_SELECTOR, 'button[data-sort="iaa"]').click()
        assert float(session.find_element(By.CSS_SELECTOR, "#cards .card").get_attribute("data-iaa")) == pytest.approx(
            expected_best, abs=0.01
        )
        assert "highest first" in session.find_element(By.ID, "sort-status").text
        session.set_window_size(1800, 1000)  # a wide window: the cards use its whole width (issue 13)
        cards_left, cards_right, last_right = session.execute_script(
            "var box = document.getElementById('cards').getBoundingClientRect(), right = 0;"
            "document.querySelectorAll('#cards .card').forEach(function (c) { right = Math.max(right, c.getBoundingClientRect().right); });"
            "return [box.left, box.right, right];"
        )
        assert last_right >= cards_right - 0.05 * (cards_right - cards_left)
        for tick_right, svg_right in session.execute_script(  # every "100" tick drawn inside its histogram
            "return Array.prototype.filter.call(document.querySelectorAll('svg.histogram text'), function (t) { return t.textContent === '100'; })"
            ".map(function (t) { return [t.getBoundingClientRect().right, t.ownerSVGElement.getBoundingClientRect().right]; });"
        ):
            assert tick_right <= svg_right + 0.5
        assert [entry for entry in session.get_log("browser") if entry["level"] == "SEVERE"] == []
    finally:
        session.quit()


def test_report_layout_fixes():
    """Issue 13: the "100" tick inside the histogram, names that wrap at separators (not mid-name),
    cards that fill a wide page, and no image both among the best and the worst of an axis."""
    from perceptlite.datasets.report import build_report, histogram_svg
    from perceptlite.records import ScoreResult

    svg = histogram_svg([0.0, 50.0, 100.0], "iaa")
    last_tick = re.findall(r'<text x="(\d+)"[^>]*text-anchor="(\w+)">100</text>', svg)
    view_left, _, view_width, _ = map(float, re.search(r'viewBox="([^"]+)"', svg).group(1).split())
    assert last_tick and last_tick[0][1] == "end" and float(last_tick[0][0]) <= view_left + view_width
    results = [ScoreResult(f"/photos/holiday_2024/img-{i:02d}.jpg", 10.0 * i, 50.0, 50.0, 10, 10) for i in range(7)]
    page = build_report(results, jobs=1)
    assert "break-all" not in page and "overflow-wrap:anywhere" in page
    assert "/<wbr>photos/<wbr>holiday_<wbr>2024/<wbr>img-<wbr>02.jpg" in page
    assert "grid-template-columns:repeat(auto-fill,minmax(200px,1fr))" in page  # cards fill the width
    sections = re.findall(r'data-axis="iaa" data-kind="(best|worst)">(.*?)(?=<h3>|<h2>)', page)
    names = {kind: re.findall(r"img-<wbr>(\d\d)", cells) for kind, cells in sections}
    assert names["best"] == ["06", "05", "04", "03", "02"] and names["worst"] == ["00", "01"]  # 7 images: no overlap
