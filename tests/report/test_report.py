"""The report renderer: self-contained HTML, Markdown with PNG files, strict JSON and CSV."""

import base64
import csv
import json
import math
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from cnnlab.report import Report, fmt_num, save_results


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.cells, self.links = [], [], []
        self._in_td = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.imgs.append(attrs["src"])
        if tag in ("link", "script") and ("href" in attrs or "src" in attrs):
            self.links.append(attrs)
        self._in_td = tag in ("td", "th")

    def handle_data(self, data):
        if self._in_td:
            self.cells.append(data)


def _report(tmp_path):
    rep = Report(tmp_path, "A <study>")
    rep.section("Results").text("MobileNet **wins** at `alpha=0.5` & below.")
    rep.bullets(["one", "two"])
    rep.table([{"model": "v1|x", "acc": 0.91234, "macs": 12_345_678}],
              [("model", "model", None), ("acc", "accuracy", lambda v: f"{100 * v:.1f}%"),
               ("macs", "MACs", None)], caption="runs")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = rep.figure(fig, "acc vs macs", "Accuracy against MACs")
    return rep, png


def test_html_is_self_contained_and_embeds_the_exact_png(tmp_path):
    rep, png = _report(tmp_path)
    md, page = rep.write()
    parser = _Collect()
    parser.feed(page.read_text())
    assert parser.links == []  # no external stylesheet or script
    assert len(parser.imgs) == 1 and parser.imgs[0].startswith("data:image/png;base64,")
    assert base64.b64decode(parser.imgs[0].split(",", 1)[1]) == png.read_bytes()
    assert "v1|x" in parser.cells and "91.2%" in parser.cells and "12,345,678" in parser.cells
    text = page.read_text()
    assert "A &lt;study&gt;" in text and "<strong>wins</strong>" in text
    assert "<code>alpha=0.5</code> &amp; below" in text


def test_markdown_links_the_png_and_escapes_table_pipes(tmp_path):
    rep, png = _report(tmp_path)
    md, _ = rep.write()
    text = md.read_text()
    assert text.startswith("# A <study>")
    assert "![Accuracy against MACs](plots/acc-vs-macs.png)" in text
    assert "| v1\\|x | 91.2% | 12,345,678 |" in text
    assert png.read_bytes().startswith(b"\x89PNG")


def test_results_json_is_strict_and_csv_has_every_key(tmp_path):
    rows = [{"a": 1, "b": float("nan")}, {"a": 2, "c": "x"}]
    jpath, cpath = save_results(tmp_path, {"runs": rows, "inf": math.inf}, rows)
    data = json.loads(jpath.read_text())  # strict: NaN/inf became null
    assert data["runs"][0]["b"] is None and data["inf"] is None
    with cpath.open() as f:
        got = list(csv.DictReader(f))
    assert [r["a"] for r in got] == ["1", "2"] and got[1]["c"] == "x" and got[0]["c"] == ""


@pytest.mark.parametrize("value,expected", [
    (None, "-"), (float("nan"), "-"), (1234567, "1,234,567"), (0.91234, "0.912"),
    (1.5e-5, "1.50e-05"), (2.5e7, "2.50e+07"), (12345.6, "12,346"), (True, "yes"),
])
def test_fmt_num(value, expected):
    assert fmt_num(value) == expected


def test_figure_rejects_non_png(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("not a png")
    with pytest.raises(ValueError, match="not a PNG"):
        Report(tmp_path / "r", "t").figure(bad, "x", "y")


def test_markdown_table_escapes_once_and_analysis_uses_it():
    from cnnlab.report import csv_text, markdown_table

    lines = markdown_table(["a|b", "c"], [["x|y", "two\nlines"]])
    assert lines == ["| a\\|b | c |", "|---|---|", "| x\\|y | two lines |"]
    # NaN becomes an empty cell (JSON null), columns are the union of the rows' keys
    text = csv_text([{"a": 1.5}, {"b": float("nan"), "a": 2}])
    assert list(csv.reader(text.splitlines())) == [["a", "b"], ["1.5", ""], ["2", ""]]
