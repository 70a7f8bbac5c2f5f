"""leaderboard.md from verified records: trust sections, columns per test set, replicates, paired
ranks, inert names, and marker-region updates."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest
from record_support import binary_predictions, write_submission

from medfm import leaderboard as lb
from medfm.errors import UserError
from medfm.registry import load_registry
from medfm.standings import Policy, build_standings
from medfm.verification import KnownSpecs, scan_results

EVIL = "evil\\|<script>alert(1)</script>[x](http://a)`code` **bold** ~~gone~~ https://evil.example _i_"


@pytest.fixture(scope="module")
def known() -> KnownSpecs:
    return KnownSpecs.from_registry(load_registry())


def standings(root, known, policy=None):
    return build_standings(scan_results(root, known), known, policy or Policy())


def table_rows(markdown: str, title: str, nth: int = 0) -> list[list[str]]:
    """Cells of each row of the ``nth`` table after the heading ``title`` (GFM: ``\\x`` escapes x)."""
    lines = markdown.split("\n")
    start = lines.index(f"### `{title}`")
    tables, current = [], []
    for line in lines[start + 1 :]:
        if line.startswith("### ") or line.startswith("## "):
            break
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    rows = []
    for line in tables[nth]:
        body = line.strip()[1:-1]
        cells, cell, i = [], "", 0
        while i < len(body):
            if body[i] == "\\" and i + 1 < len(body):
                cell += body[i : i + 2]
                i += 2
                continue
            if body[i] == "|":
                cells.append(cell.strip())
                cell = ""
            else:
                cell += body[i]
            i += 1
        cells.append(cell.strip())
        rows.append(cells)
    return rows


def body(markdown: str, title: str, nth: int = 0) -> dict[str, list[str]]:
    rows = table_rows(markdown, title, nth)
    header = rows[0]
    col = header.index("backbone")
    return {r[col].strip("`"): r for r in rows[2:]}


def order(markdown: str, title: str, nth: int = 0) -> list[str]:
    rows = table_rows(markdown, title, nth)
    col = rows[0].index("backbone")
    return [r[col].strip("`") for r in rows[2:]]


# ------------------------------------------------------------------ ranking
def test_rows_rank_by_mean_with_paired_groups(tmp_path, known):
    # strong and weak are far apart; weak and weaker are on the same scores up to noise
    strong = binary_predictions(strength=0.4, seed=1)
    weak = binary_predictions(strength=0.12, seed=2)
    weaker = binary_predictions(strength=0.11, seed=3)
    for name, preds in (("strong", strong), ("weak", weak), ("weaker", weaker)):
        write_submission(tmp_path, preds, backbone=name)
    board = standings(tmp_path, known)
    md = lb.render(board)
    assert order(md, "knn v2") == ["strong", "weak", "weaker"]
    rows = body(md, "knn v2")
    assert [rows[n][0] for n in ("strong", "weak", "weaker")] == ["1", "2", "3"]
    assert rows["strong"][1] == "1"  # separated from both others
    assert rows["weak"][1] == "2–3" and rows["weaker"][1] == "2–3"  # not separable: one rank group
    table = board.section("ranked")[0]
    first = table.blocks[0].rows[0]
    assert first.vs_next.difference > 0 and first.vs_next.ci_low > 0 and first.vs_next.p_holm < 0.05
    second = table.blocks[0].rows[1]
    assert second.vs_next.ci_low < 0 < second.vs_next.ci_high and second.vs_next.p_holm > 0.05
    # the Holm-adjusted p is shown for each step down the table
    assert re.match(r"^\+0\.\d{3} \[\+0\.\d{3}, \+0\.\d{3}\]$", rows["strong"][-2])
    assert rows["strong"][-1] == lb._p(first.vs_next.p_holm)


def test_equal_values_share_a_rank(tmp_path, known):
    preds = binary_predictions(strength=0.3, seed=4)
    write_submission(tmp_path, preds, backbone="twin-a")
    squashed = preds.scores**2 / (preds.scores**2).sum(1, keepdims=True)  # other scores, same ranking
    write_submission(tmp_path, type(preds)(preds.ids, preds.labels, squashed), backbone="twin-b")
    write_submission(tmp_path, binary_predictions(strength=0.02, seed=9), backbone="worse")
    rows = body(lb.render(standings(tmp_path, known)), "knn v2")
    assert rows["twin-a"][0] == rows["twin-b"][0] == "1"
    assert rows["worse"][0] == "3"
    assert rows["twin-a"][1] == rows["twin-b"][1]


def test_partial_rows_are_ranked_in_their_own_block(tmp_path, known):
    breast = {"dataset": "medmnist/breastmnist_64", "dataset_revision": "v2", "classes": ("malignant", "benign")}
    pneumonia = {"dataset": "medmnist/pneumoniamnist", "dataset_revision": "v2", "classes": ("normal", "pneumonia")}
    for name, s in (("full-a", 0.3), ("full-b", 0.2)):
        write_submission(tmp_path, binary_predictions(strength=s, seed=1), backbone=name, **breast)
        write_submission(tmp_path, binary_predictions(n=150, strength=s, seed=2), backbone=name, **pneumonia)
    # a single excellent result on one data set: a mean over 1 of 2 is not comparable
    write_submission(tmp_path, binary_predictions(strength=0.49, seed=3), backbone="one-set-wonder", **breast)
    md = lb.render(standings(tmp_path, known))
    assert order(md, "knn v2", 0) == ["full-a", "full-b"]
    assert order(md, "knn v2", 1) == ["one-set-wonder"]
    assert "Rows with results on only `medmnist/breastmnist_64` (ranked among themselves):" in md
    header = table_rows(md, "knn v2", 0)[0]
    assert header[-3] == "mean"


def test_synthetic_data_sets_are_ranked_apart_from_real_ones(tmp_path, known):
    write_submission(tmp_path, binary_predictions(strength=0.3, seed=1), backbone="net")
    write_submission(
        tmp_path,
        binary_predictions(strength=0.3, seed=2),
        backbone="net",
        dataset="medmnist/breastmnist_64",
        dataset_revision="v2",
        classes=("malignant", "benign"),
    )
    board = standings(tmp_path, known)
    assert [t.synthetic for t in board.section("ranked")] == [False, True]
    md = lb.render(board)
    assert (
        md.index("`medmnist/breastmnist_64`")
        < md.index("## Smoke test: synthetic data")
        < md.index("`synthetic/cxr-nodules`")
    )


def test_replicates_are_averaged_with_spread_and_n(tmp_path, known):
    for seed in (0, 1, 2):
        write_submission(tmp_path, binary_predictions(strength=0.3, seed=10 + seed), backbone="net", seed=seed)
    board = standings(tmp_path, known)
    row = board.section("ranked")[0].blocks[0].rows[0]
    cell = next(iter(row.cells.values()))
    values = [c.record["metrics"]["auroc"]["value"] for c in cell.rankable]
    assert len(values) == 3 and cell.value == pytest.approx(np.mean(values))
    assert cell.sd == pytest.approx(np.std(values, ddof=1))
    # the interval of the mean: the same resampled cases for every replicate
    from medfm.paired import metric_draws, resampling_weights

    w = resampling_weights(cell.rankable[0].record["test_set"]["identity"], 120, None)
    mean_draws = np.mean(
        [metric_draws("binary", "auroc", c.predictions.labels, c.predictions.scores, w) for c in cell.rankable], axis=0
    )
    lo, hi = np.percentile(mean_draws, [2.5, 97.5])
    assert cell.interval == pytest.approx((lo, hi)) and lo < cell.value < hi
    text = body(lb.render(board), "knn v2")["net"][3]
    assert text == f"{np.mean(values):.3f} [{lo:.3f}, {hi:.3f}] ± {np.std(values, ddof=1):.3f} (n=3)"


def test_a_cell_with_a_flagged_replicate_is_not_ranked(tmp_path, known):
    write_submission(tmp_path, binary_predictions(strength=0.3, seed=1), backbone="net", seed=0)
    write_submission(tmp_path, binary_predictions(strength=0.0, seed=3), backbone="net", seed=1)  # chance level
    write_submission(tmp_path, binary_predictions(strength=0.2, seed=2), backbone="other")
    board = standings(tmp_path, known)
    md = lb.render(board)
    assert order(md, "knn v2") == ["other"]  # net's good seed alone would overstate it
    assert re.search(
        r"^- `net` on `synthetic/cxr-nodules`: ⚠ 0\.\d{3}, 0\.\d{3}, `1 of 2 replicates flagged; "
        r"flagged: chance_auroc`$",
        md,
        re.M,
    )
    assert lb.render(build_standings(scan_results(tmp_path, known), known, Policy())) == md  # builds are pure


def test_flagged_and_underpowered_results_are_shown_with_reasons_but_not_ranked(tmp_path, known):
    write_submission(tmp_path, binary_predictions(strength=0.0, seed=3), backbone="chance")  # chance_auroc
    write_submission(tmp_path, binary_predictions(strength=0.3, seed=1), backbone="few-resamples", resamples=200)
    write_submission(tmp_path, binary_predictions(strength=0.2, seed=2), backbone="steady")
    md = lb.render(standings(tmp_path, known))
    assert order(md, "knn v2") == ["steady"]
    assert re.search(r"^- `chance` on `synthetic/cxr-nodules`: ⚠ 0\.\d{3}, `flagged: chance_auroc`$", md, re.M)
    assert re.search(
        r"^- `few-resamples` on `synthetic/cxr-nodules`: ⚠ 0\.\d{3}, `only 200 bootstrap resamples", md, re.M
    )
    assert lb.FLAG_MARK in md.split("## Ranked")[0]  # the legend explains the mark


def test_an_error_from_another_submitter_never_replaces_a_result(tmp_path, known):
    from medfm.records import cell_paths, write_record

    good = write_submission(tmp_path, binary_predictions(strength=0.3), backbone="net")
    import json

    record = json.loads(good.read_text())
    for key in ("metrics", "predictions", "flags", "primary_metric", "test_set", "ci"):
        record.pop(key)
    record.update(status="error", error={"type": "RuntimeError", "message": "out of memory"})
    record["submission"]["submitter"] = "bob"
    write_record(cell_paths(tmp_path, "net", record["dataset"]["name"], "knn", "bob", 0).record, record)
    rows = body(lb.render(standings(tmp_path, known)), "knn v2")
    assert rows["net"][3].startswith("0.") and rows["net"][0] == "1"


def test_columns_are_keyed_by_test_set(tmp_path, known):
    write_submission(tmp_path, binary_predictions(n=120, strength=0.3), backbone="net-a")
    write_submission(tmp_path, binary_predictions(n=130, strength=0.3), backbone="net-b")
    board = standings(tmp_path, known)
    table = board.section("ranked")[0]
    assert len(table.columns) == 2
    labels = sorted(c.label for c in table.columns)
    assert all(label.startswith("synthetic/cxr-nodules · test n=") for label in labels)
    assert {c.n_cases for c in table.columns} == {120, 130}
    md = lb.render(board)
    assert "test n=120 #" in md and "test n=130 #" in md
    # neither row covers the other's column: they are never ranked against each other
    assert [len(b.rows) for b in table.blocks] == [1, 1]


def test_plugins_outside_the_trusted_distributions_are_shown_apart(tmp_path, known):
    write_submission(tmp_path, binary_predictions(strength=0.2), backbone="honest")
    write_submission(tmp_path, binary_predictions(strength=0.49), backbone="suspicious", distribution="evil-dist")
    write_submission(tmp_path, binary_predictions(strength=0.48), backbone="claims-medfm", protocol_version="999")
    board = standings(tmp_path, known)
    md = lb.render(board)
    ranked, unverified = md.split("## Unverified")
    assert order(ranked, "knn v2") == ["honest"]
    assert "`suspicious`" in unverified and "`claims-medfm`" in unverified
    assert "evil-dist" in unverified and "which is not trusted" in unverified
    assert "version 999 is not the installed 2" in unverified
    # allow-listing a distribution is not enough: the installed plugin must be the claimed one
    allow = build_standings(scan_results(tmp_path, known), known, Policy(("medfm", "evil-dist")))
    assert [r.backbone for t in allow.section("ranked") for b in t.blocks for r in b.rows] == ["honest"]


def test_an_allowlisted_distribution_that_is_installed_is_ranked(tmp_path, known):
    lab = KnownSpecs(
        known.dataset_lookup,
        lambda kind, name: (
            ("lab-plugins", "1") if (kind, name) == ("protocol", "lab_knn") else known.provider(kind, name)
        ),
    )
    write_submission(
        tmp_path,
        binary_predictions(strength=0.3),
        backbone="net",
        protocol="lab_knn",
        protocol_version="1",
        protocol_distribution="lab-plugins",
    )
    assert build_standings(scan_results(tmp_path, lab), lab, Policy()).section("ranked") == []
    trusted = build_standings(scan_results(tmp_path, lab), lab, Policy(("medfm", "lab-plugins")))
    assert [r.backbone for t in trusted.section("ranked") for b in t.blocks for r in b.rows] == ["net"]
    assert "from `lab-plugins`" in lb.render(trusted)


def test_render_is_deterministic_and_independent_of_file_order(tmp_path, known):
    for i in range(4):
        write_submission(tmp_path, binary_predictions(strength=0.1 + 0.05 * i, seed=i), backbone=f"net-{i}")
    first = lb.render(standings(tmp_path, known))
    copy = tmp_path.parent / (tmp_path.name + "-copy")
    shutil.copytree(tmp_path, copy)
    assert lb.render(standings(copy, known)) == first == lb.render(standings(tmp_path, known))


def test_no_records(tmp_path, known):
    md = lb.render(standings(tmp_path, known))
    assert "|" not in md and "###" not in md


# ------------------------------------------------------------------ inert names
@pytest.mark.parametrize(
    "text",
    [
        EVIL,
        "a|b",
        "<img src=x onerror=alert(1)>",
        "[x](http://a)",
        "`x`",
        "``y`",
        "line\nbreak",
        "back\\slash|",
        "![i](http://a/x.png)",
        "a & b",
        "www.evil.example",
        "me@evil.example",
    ],
)
def test_md_code_makes_any_text_a_single_inert_code_span(text):
    markdown_it = pytest.importorskip("markdown_it")
    out = lb.md_code(text, in_table=False)
    assert "\n" not in out
    html = markdown_it.MarkdownIt("commonmark", {"linkify": False}).render(out)
    assert html.count("<code>") == 1 and "<a " not in html and "<img" not in html and "<script" not in html
    assert "<strong>" not in html and "<em>" not in html


def test_hostile_names_render_inert_in_a_real_markdown_parser(tmp_path, known):
    markdown_it = pytest.importorskip("markdown_it")
    write_submission(tmp_path, binary_predictions(strength=0.3), backbone=EVIL)
    write_submission(tmp_path, binary_predictions(strength=0.1, seed=2), backbone="plain")
    md = lb.render(standings(tmp_path, known))
    parser = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])
    html = parser.render(md)
    assert "<script" not in html and "<a " not in html and "<strong>bold" not in html and "<del>" not in html
    import html as htmllib

    codes = [htmllib.unescape(c) for c in re.findall(r"<code>(.*?)</code>", html, flags=re.S)]
    assert EVIL in codes  # shown, character for character, as inert code
    assert "`backbone.name holds characters that render as markup or links; rename it`" in md  # never ranked
    tables = re.findall(r"<table>(.*?)</table>", html, flags=re.S)
    assert len(tables) == 1
    rows = re.findall(r"<tr>(.*?)</tr>", tables[0], flags=re.S)
    assert len(rows) == 2  # header + the plain backbone: no injected rows
    widths = {len(re.findall(r"<t[hd][ >]", r)) for r in rows}
    assert len(widths) == 1


# ------------------------------------------------------------------ the file
HAND_BEFORE = "# Our results\n\nHand-written intro with a | pipe and <b>html</b>.\n\n"
HAND_AFTER = "\n\n## Notes\n\nHand-written notes stay.\n"


@pytest.fixture
def one_board(tmp_path, known):
    write_submission(tmp_path / "r", binary_predictions(strength=0.3), backbone="net")
    return standings(tmp_path / "r", known)


@pytest.fixture
def other_board(tmp_path, known):
    write_submission(tmp_path / "r2", binary_predictions(strength=0.2), backbone="net2")
    return standings(tmp_path / "r2", known)


def test_update_file_only_rewrites_the_marker_region(tmp_path, one_board):
    path = tmp_path / "leaderboard.md"
    path.write_text(HAND_BEFORE + lb.START + "\nold stale table\n" + lb.END + HAND_AFTER, encoding="utf-8")
    assert lb.update_file(path, one_board) is True
    text = path.read_text(encoding="utf-8")
    assert text.startswith(HAND_BEFORE + lb.START + "\n") and text.endswith(lb.END + HAND_AFTER)
    assert "old stale table" not in text
    region = text[text.index(lb.START) + len(lb.START) : text.index(lb.END)]
    assert region.strip() == lb.render(one_board).strip()


def test_update_file_does_not_write_when_unchanged(tmp_path, one_board, other_board):
    path = tmp_path / "leaderboard.md"
    assert lb.update_file(path, one_board) is True
    old = 1_000_000_000_000_000_000
    os.utime(path, ns=(old, old))
    before = path.read_bytes()
    assert lb.update_file(path, one_board) is False
    assert path.stat().st_mtime_ns == old and path.read_bytes() == before
    assert lb.update_file(path, other_board) is True
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_update_file_creates_and_appends_markers(tmp_path, one_board):
    new = tmp_path / "new.md"
    lb.update_file(new, one_board)
    assert new.read_text(encoding="utf-8").startswith(lb.DEFAULT_HEADER)
    plain = tmp_path / "plain.md"
    plain.write_text("# Mine\n\nno markers yet\n", encoding="utf-8")
    assert lb.update_file(plain, one_board)
    assert plain.read_text(encoding="utf-8").startswith("# Mine\n\nno markers yet\n")
    assert lb.update_file(plain, one_board) is False  # idempotent after the markers were appended


def test_is_stale(tmp_path, one_board, other_board):
    path = tmp_path / "leaderboard.md"
    assert lb.is_stale(path, one_board)
    lb.update_file(path, one_board)
    assert not lb.is_stale(path, one_board) and lb.is_stale(path, other_board)
    path.write_text(path.read_text(encoding="utf-8") + "\nmore hand text\n", encoding="utf-8")
    assert not lb.is_stale(path, one_board)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("| 1 |", "| 2 |"), encoding="utf-8")
    assert lb.is_stale(path, one_board)


def test_stray_start_marker_never_deletes_hand_written_text(tmp_path, one_board):
    path = tmp_path / "leaderboard.md"
    path.write_text(HAND_BEFORE + lb.START + "\nHand-written text after a lost END marker.\n", encoding="utf-8")
    before = path.read_text(encoding="utf-8")
    with pytest.raises(UserError, match="unbalanced"):
        lb.update_file(path, one_board)
    assert path.read_text(encoding="utf-8") == before
