"""The web leaderboard in a real browser: Debian's chromium driven headless by playwright.

The page is built by ``medfm leaderboard --html`` from verified records, opened from disk (no
server: it must work offline and on a static host), and checked by clicking: sorting,
filtering, views, links, downloads; the numbers on the page must be the records' numbers; and
names holding ``<script>``, ``<img onerror>`` or markdown must render as plain text and run
nothing.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from record_support import binary_predictions, write_submission

from medfm.cli import main

SCRIPT_NAME = "net<script>window.__pwned='script'</script>"
IMG_NAME = "net<img src=x onerror=\"window.__pwned='img'\">"
MD_NAME = "net **bold** [link](https://evil.example) ~~x~~"
BREAST = {
    "dataset": "medmnist/breastmnist_64",
    "dataset_revision": "v2",
    "classes": ("malignant", "normal, benign"),
    "modality": "breast ultrasound",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Three ranked backbones on two data sets, one unverified result, and three hostile names."""
    root = tmp_path_factory.mktemp("site")
    results = root / "results"
    models = {
        "dinov2-like": (0.40, "self-supervised", 21_000_000),
        "resnet-like": (0.25, "supervised", 25_000_000),
        "tiny-net": (0.10, "supervised", 1_000_000),
    }
    for name, (strength, objective, params) in models.items():
        write_submission(
            results,
            binary_predictions(strength=strength, seed=1),
            backbone=name,
            objective=objective,
            params=params,
            **BREAST,
        )
        write_submission(
            results,
            binary_predictions(n=150, strength=strength, seed=2),
            backbone=name,
            dataset="medmnist/pneumoniamnist",
            dataset_revision="v2",
            classes=("normal", "pneumonia"),
            objective=objective,
            params=params,
            modality="chest X-ray",
        )
    write_submission(
        results, binary_predictions(strength=0.45, seed=3), backbone="outsider", distribution="lab-dist", **BREAST
    )
    for i, evil in enumerate((SCRIPT_NAME, IMG_NAME, MD_NAME)):
        write_submission(results, binary_predictions(strength=0.3, seed=10 + i), backbone=evil, **BREAST)
    out = root / "site"
    with pytest.raises(SystemExit) as done:
        main(["leaderboard", "--results", str(results), "--file", str(root / "leaderboard.md"), "--html", str(out)])
    assert done.value.code == 0
    return {"dir": out, "results": results, "models": models}


@pytest.fixture
def page(browser, site):
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: (errors.append("dialog: " + d.message), d.dismiss()))
    page.goto((site["dir"] / "index.html").as_uri())
    page.wait_for_selector("table.board")
    yield page
    assert errors == [], errors
    context.close()


def rows(page, block: int = 0) -> list[str]:
    return page.eval_on_selector_all(f"table.board[data-block='{block}'] tbody tr", "rs => rs.map(r => r.dataset.row)")


def records_by_cell(results: Path) -> dict:
    out = {}
    for path in results.rglob("*.json"):
        record = json.loads(path.read_text())
        out[(record["backbone"]["name"], record["dataset"]["name"], record["protocol"]["name"])] = (path, record)
    return out


def test_numbers_on_the_page_are_the_records(page, site):
    by_cell = records_by_cell(site["results"])
    cells = page.eval_on_selector_all(
        "table.board[data-block='0'] tbody td[data-col]",
        "tds => tds.map(td => [td.parentElement.dataset.row, td.dataset.col, td.dataset.value, td.textContent])",
    )
    data = json.loads((site["dir"] / "leaderboard.json").read_text())
    columns = {c["id"]: c for t in data["tables"] for c in t["columns"]}
    assert len(cells) == 6  # three ranked backbones on two data sets
    for row, col, value, text in cells:
        record = by_cell[(row, columns[col]["dataset"], "knn")][1]
        auroc = record["metrics"]["auroc"]
        assert float(value) == pytest.approx(auroc["value"], abs=1e-9)
        assert text.startswith(f"{auroc['value']:.3f} [{auroc['ci_low']:.3f}, {auroc['ci_high']:.3f}]")


def test_click_to_sort(page, site):
    assert rows(page) == ["dinov2-like", "resnet-like", "tiny-net"]  # by rank
    page.click("table.board[data-block='0'] th[data-sort='backbone']")
    assert rows(page) == ["dinov2-like", "resnet-like", "tiny-net"]
    page.click("table.board[data-block='0'] th[data-sort='backbone']")
    assert rows(page) == ["tiny-net", "resnet-like", "dinov2-like"]
    page.click("table.board[data-block='0'] th[data-sort='params']")
    assert rows(page) == ["resnet-like", "dinov2-like", "tiny-net"]  # most parameters first
    page.click("table.board[data-block='0'] th[data-sort='params']")
    assert rows(page) == ["tiny-net", "dinov2-like", "resnet-like"]
    assert page.get_attribute("table.board[data-block='0'] th[data-sort='params']", "class").endswith("sorted-asc")


def test_filters(page, site):
    page.select_option("#filter-objective", "self-supervised")
    assert rows(page) == ["dinov2-like"]
    page.select_option("#filter-objective", "")
    page.fill("#filter-max-params", "22")
    assert rows(page) == ["dinov2-like", "tiny-net"]
    page.fill("#filter-min-params", "5")
    assert rows(page) == ["dinov2-like"]
    page.fill("#filter-max-params", "")
    page.fill("#filter-min-params", "")
    page.select_option("#filter-modality", "chest X-ray")
    headers = page.eval_on_selector_all("table.board[data-block='0'] th[data-sort]", "ts => ts.map(t => t.textContent)")
    assert any("pneumoniamnist" in h for h in headers) and not any("breastmnist" in h for h in headers)
    page.select_option("#filter-modality", "")
    nav = lambda: page.eval_on_selector_all("#nav-tables button", "bs => bs.map(b => b.textContent)")  # noqa: E731
    assert any("unverified" in t for t in nav())
    page.uncheck("#filter-unverified")
    assert not any("unverified" in t for t in nav())
    page.uncheck("#filter-ranked")
    assert nav() == [] and "No results match" in page.text_content("#content")


def test_views_per_protocol_and_per_data_set_with_a_forest_plot(page, site):
    page.click("#nav-tables button:has-text('unverified')")
    assert page.text_content("h2.view-title").startswith("knn v2 from lab-dist")
    assert "lab-dist, which is not trusted" in page.text_content("#content")
    page.click("#nav-datasets button:has-text('medmnist/pneumoniamnist')")
    assert page.locator("svg.forest circle").count() == 3
    labels = page.eval_on_selector_all("svg.forest text", "ts => ts.map(t => t.textContent)")
    assert "knn · dinov2-like" in labels


def test_every_value_links_to_its_record_and_downloads_match(page, site):
    hrefs = page.eval_on_selector_all("table.board[data-block='0'] td[data-col] a", "as => as.map(a => a.href)")
    assert len(hrefs) == 6
    by_cell = records_by_cell(site["results"])
    for href in hrefs:
        copy = json.loads(Path(href.removeprefix("file://")).read_text())
        original = by_cell[(copy["backbone"]["name"], copy["dataset"]["name"], copy["protocol"]["name"])][1]
        assert copy == original
    assert page.get_attribute("#download-csv", "href") == "leaderboard.csv"
    with open(site["dir"] / "leaderboard.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    for line in lines:
        if line["section"] == "ranked" and line["value"]:
            name = line["backbone"]
            record = next(r for (b, d, p), (_, r) in by_cell.items() if b == name and line["dataset"] == d)
            assert float(line["value"]) == pytest.approx(record["metrics"]["auroc"]["value"])


def test_hostile_names_render_as_text_and_run_nothing(page, site):
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 2  # the page's own data and code
    assert page.locator("strong, em, del").count() == 0
    text = page.text_content("#content")
    for name in (SCRIPT_NAME, IMG_NAME, MD_NAME):
        assert name in text  # shown, literally, in the list of results that are not ranked
    links = page.eval_on_selector_all("a", "as => as.map(a => a.getAttribute('href'))")
    assert not any("evil.example" in (h or "") for h in links)
    page.click("#nav-datasets button:has-text('medmnist/breastmnist_64')")
    assert page.evaluate("window.__pwned") is None and page.locator("img").count() == 0
