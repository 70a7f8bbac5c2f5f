"""leaderboard.md: rendering from records, escaping of hostile names, marker-region updates."""

from __future__ import annotations

import os
import random
import re

import pytest

from medfm.errors import UserError

from medfm import leaderboard as lb
from medfm.records import validate_record

EVIL = "evil\\|<script>alert(1)</script>[x](http://a)`code`\n| injected | row |"


def make_record(backbone: str, dataset: str, protocol: str, value: float | None, *, metric: str = "auroc",
                flags: list[str] | None = None, status: str = "ok") -> dict:
    prov = {"name": "test-plugin", "distribution": None, "version": None}
    record = {
        "schema_version": 1, "status": status,
        "backbone": {"name": backbone, "revision": "1", "plugin": prov},
        "dataset": {"name": dataset, "revision": "1", "plugin": prov, "task": "binary"},
        "protocol": {"name": protocol, "version": "1", "plugin": prov},
        "config": {}, "config_hash": "0" * 64, "seed": 0,
        "versions": {"medfm": "0", "torch": "0", "timm": "0", "python": "3"}, "device": "cpu",
    }
    if status == "ok":
        ci = None if value is None else (value - 0.05, value + 0.05)
        record.update({
            "primary_metric": metric,
            "metrics": {metric: {"value": value, "ci_low": ci and ci[0], "ci_high": ci and ci[1]},
                        "accuracy": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}},
            "flags": list(flags or []),
            "predictions": {"file": "p.predictions.npz", "sha256": "a" * 64, "n": 10},
        })
    else:
        record["error"] = {"type": "RuntimeError", "message": "boom"}
    validate_record(record)
    return record


def table_rows(markdown: str, protocol: str) -> list[list[str]]:
    """Cells of each row of the table under ``### protocol`` (GFM rules: ``\\x`` escapes x)."""
    lines = markdown.split("\n")
    start = lines.index(f"### {protocol}")
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells, current, i = [], "", 0
        body = line.strip()[1:-1] if line.strip().endswith("|") else line.strip()[1:]
        while i < len(body):
            ch = body[i]
            if ch == "\\" and i + 1 < len(body):
                current += body[i:i + 2]
                i += 2
                continue
            if ch == "|":
                cells.append(current.strip())
                current = ""
            else:
                current += ch
            i += 1
        cells.append(current.strip())
        rows.append(cells)
    return rows


def ranked_backbones(markdown: str, protocol: str) -> list[str]:
    return [row[1] for row in table_rows(markdown, protocol)[2:]]


# ------------------------------------------------------------------ rendering
def test_one_table_per_protocol_sorted_by_mean():
    values = {("a-net", "d1"): 0.70, ("a-net", "d2"): 0.90,   # mean 0.80
              ("b-net", "d1"): 0.95, ("b-net", "d2"): 0.85,   # mean 0.90
              ("c-net", "d1"): 0.60, ("c-net", "d2"): 0.62}   # mean 0.61
    records = [make_record(b, d, "knn", v) for (b, d), v in values.items()]
    records += [make_record(b, d, "linear_probe", 1 - v) for (b, d), v in values.items()]
    md = lb.render(records)
    assert md.count("### ") == 2 and "### knn" in md and "### linear_probe" in md
    means = {b: (values[(b, "d1")] + values[(b, "d2")]) / 2 for b in ("a-net", "b-net", "c-net")}
    assert ranked_backbones(md, "knn") == sorted(means, key=lambda b: -means[b])
    assert ranked_backbones(md, "linear_probe") == sorted(means, key=lambda b: means[b])
    rows = table_rows(md, "knn")
    header = rows[0]
    assert header[1] == "backbone" and header[-1] == "mean"
    assert [h.split(" ")[0] for h in header[2:-1]] == ["d1", "d2"]
    assert all("(auroc)" in h for h in header[2:-1])
    body = rows[2:]
    assert [r[0] for r in body] == ["1", "2", "3"]
    for row in body:
        assert len(row) == len(header)
        assert float(row[-1]) == pytest.approx(means[row[1]], abs=1e-3)
        assert row[2].startswith(f"{values[(row[1], 'd1')]:.3f} [")


def test_flagged_result_is_marked_and_not_ranked():
    records = [make_record("flashy", "d1", "knn", 0.99, flags=["collapsed_predictions"]),
               make_record("flashy", "d2", "knn", 0.98),
               make_record("steady", "d1", "knn", 0.60), make_record("steady", "d2", "knn", 0.61)]
    md = lb.render(records)
    rows = {r[1]: r for r in table_rows(md, "knn")[2:]}
    assert rows["flashy"][2].startswith(lb.FLAG_MARK)
    assert lb.FLAG_MARK not in rows["steady"][2]
    # the flagged 0.99 counts neither in the mean nor in the ranking
    assert ranked_backbones(md, "knn") == ["steady", "flashy"]
    assert rows["flashy"][-1].startswith("0.980") and "(1/2)" in rows["flashy"][-1]
    assert lb.FLAG_MARK in md.split("###")[0]  # the legend explains the mark
    assert lb.FLAG_MARK not in lb.render(records[1:]).split("###")[0]


def test_error_and_partial_rows_rank_below_complete_rows():
    records = [make_record("broken", "d1", "knn", None, status="error"), make_record("broken", "d2", "knn", 0.99),
               make_record("partial", "d1", "knn", 0.97),
               make_record("complete", "d1", "knn", 0.55), make_record("complete", "d2", "knn", 0.55)]
    md = lb.render(records)
    order = ranked_backbones(md, "knn")
    assert order[0] == "complete"
    rows = {r[1]: r for r in table_rows(md, "knn")[2:]}
    assert rows["broken"][2] == "error"
    assert rows["partial"][3] == ""  # no record for that cell
    assert "(1/2)" in rows["partial"][-1] and "(1/2)" in rows["broken"][-1]


def test_render_is_deterministic_and_order_independent():
    records = [make_record(f"net-{i}", f"data-{j}", p, 0.5 + 0.01 * i + 0.003 * j)
               for i in range(5) for j in range(3) for p in ("knn", "linear_probe")]
    first = lb.render(records)
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    assert lb.render(shuffled) == first
    assert lb.render(list(reversed(records))) == first
    assert lb.render(records) == first


def test_no_records():
    md = lb.render([])
    assert "|" not in md and "###" not in md


# ------------------------------------------------------------------ escaping
@pytest.mark.parametrize("text", [EVIL, "a|b", "<img src=x onerror=alert(1)>", "[x](http://a)", "`x`",
                                  "line\nbreak", "cr\rlf", "back\\slash|", "![i](http://a/x.png)", "a & b"])
def test_escape_neutralises_markdown_and_html(text):
    out = lb.escape(text)
    assert "\n" not in out and "\r" not in out
    stripped = re.sub(r"\\.", "", out)  # drop every backslash escape pair
    for ch in "|<>[]`":
        assert ch not in stripped, (ch, out)
    assert "<" not in out and ">" not in out
    # escaping is reversible in principle: nothing of the original is dropped except line breaks
    plain = re.sub(r"\\(.)", r"\1", out).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert plain == text.replace("\r", " ").replace("\n", " ")


def test_hostile_names_do_not_break_the_table():
    benign = [make_record("good-net", "d1", "knn", 0.8), make_record("good-net", "d2", "knn", 0.7)]
    hostile = benign + [make_record(EVIL, "d1", "knn", 0.6), make_record(EVIL, "d2", "knn", 0.5),
                        make_record("x", EVIL, "knn", 0.5)]
    md = lb.render(hostile)
    rows = table_rows(md, "knn")
    assert len({len(r) for r in rows}) == 1, rows  # every row has the header's column count
    assert len(rows) == 2 + 3  # header, rule, one row per backbone: no injected rows
    assert "<script" not in md and "<img" not in md
    assert "](" not in re.sub(r"\\.", "", md)  # no unescaped link syntax anywhere
    assert md.count("\n") == lb.render(benign + [make_record("y", "d1", "knn", 0.6),
                                                 make_record("y", "d2", "knn", 0.5),
                                                 make_record("x", "z", "knn", 0.5)]).count("\n")


def test_hostile_names_render_as_plain_text_in_a_real_markdown_parser():
    markdown_it = pytest.importorskip("markdown_it")
    records = [make_record(EVIL, "d1", EVIL, 0.6), make_record("plain", "d1", EVIL, 0.5)]
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(lb.render(records))
    assert "<script" not in html and "<a " not in html and "<code>" not in html
    assert html.count("<table>") == 1
    header_cells = re.findall(r"<th[ >]", html)
    rows = re.findall(r"<tr>(.*?)</tr>", html, flags=re.S)
    assert len(rows) == 3  # header + two backbones
    for row in rows[1:]:
        assert len(re.findall(r"<td[ >]", row)) == len(header_cells)


# ------------------------------------------------------------------ the file
HAND_BEFORE = "# Our results\n\nHand-written intro with a | pipe and <b>html</b>.\n\n"
HAND_AFTER = "\n\n## Notes\n\nHand-written notes stay.\n"


def test_update_file_only_rewrites_the_marker_region(tmp_path):
    path = tmp_path / "leaderboard.md"
    path.write_text(HAND_BEFORE + lb.START + "\nold stale table\n" + lb.END + HAND_AFTER, encoding="utf-8")
    records = [make_record("net", "d1", "knn", 0.7)]
    assert lb.update_file(path, records) is True
    text = path.read_text(encoding="utf-8")
    assert text.startswith(HAND_BEFORE + lb.START + "\n")
    assert text.endswith(lb.END + HAND_AFTER)
    assert "old stale table" not in text
    region = text[text.index(lb.START) + len(lb.START):text.index(lb.END)]
    assert region.strip() == lb.render(records).strip()
    assert text.count(lb.START) == text.count(lb.END) == 1


def test_update_file_does_not_write_when_unchanged(tmp_path):
    path = tmp_path / "leaderboard.md"
    records = [make_record("net", "d1", "knn", 0.7)]
    assert lb.update_file(path, records) is True
    old = 1_000_000_000_000_000_000
    os.utime(path, ns=(old, old))
    before = path.read_bytes()
    assert lb.update_file(path, records) is False
    assert path.stat().st_mtime_ns == old and path.read_bytes() == before
    assert lb.update_file(path, records + [make_record("net2", "d1", "knn", 0.6)]) is True
    assert path.stat().st_mtime_ns != old
    assert [p.name for p in tmp_path.iterdir()] == ["leaderboard.md"]  # no temp files left


def test_update_file_creates_and_appends_markers(tmp_path):
    new = tmp_path / "new.md"
    records = [make_record("net", "d1", "knn", 0.7)]
    lb.update_file(new, records)
    text = new.read_text(encoding="utf-8")
    assert text.startswith(lb.DEFAULT_HEADER) and lb.START in text and lb.END in text
    plain = tmp_path / "plain.md"
    plain.write_text("# Mine\n\nno markers yet\n", encoding="utf-8")
    assert lb.update_file(plain, records)
    text = plain.read_text(encoding="utf-8")
    assert text.startswith("# Mine\n\nno markers yet\n") and text.count(lb.START) == 1
    assert lb.update_file(plain, records) is False  # idempotent after the markers were appended


def test_is_stale(tmp_path):
    path = tmp_path / "leaderboard.md"
    records = [make_record("net", "d1", "knn", 0.7)]
    assert lb.is_stale(path, records)  # missing
    path.write_text(HAND_BEFORE, encoding="utf-8")
    assert lb.is_stale(path, records)  # no markers
    lb.update_file(path, records)
    assert not lb.is_stale(path, records)
    assert lb.is_stale(path, records + [make_record("net2", "d1", "knn", 0.6)])
    assert lb.is_stale(path, [make_record("net", "d1", "knn", 0.71)])
    # editing outside the region does not make it stale; editing inside does
    path.write_text(path.read_text(encoding="utf-8") + "\nmore hand text\n", encoding="utf-8")
    assert not lb.is_stale(path, records)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("0.700", "0.900"), encoding="utf-8")
    assert lb.is_stale(path, records)


def test_stray_start_marker_never_deletes_hand_written_text(tmp_path):
    path = tmp_path / "leaderboard.md"
    path.write_text(HAND_BEFORE + lb.START + "\nHand-written text after a lost END marker.\n", encoding="utf-8")
    before = path.read_text(encoding="utf-8")
    records = [make_record("net", "d1", "knn", 0.7)]
    with pytest.raises(UserError, match="unbalanced"):
        lb.update_file(path, records)
    assert path.read_text(encoding="utf-8") == before  # nothing hand-written is lost
