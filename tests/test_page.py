import csv
import math

from faceaudit.report.page import Page, format_cell, markdown_table, write_table


def test_cells_round_and_blank_missing_values():
    assert format_cell(0.123456789) == "0.1235"
    assert format_cell(1.5, digits=2) == "1.50"
    assert format_cell(float("nan")) == "" and format_cell(None) == ""
    assert format_cell(True) == "yes" and format_cell(7) == "7"


def test_markdown_table_escapes_pipes():
    text = markdown_table(["a|b", "x"], [["p|q", 0.5]])
    assert text.splitlines()[0] == "| a\\|b | x |"
    assert text.splitlines()[2] == "| p\\|q | 0.5000 |"


def test_write_table_keeps_full_precision_in_csv(tmp_path):
    csv_path, md_path = write_table(tmp_path / "t", ["name", "value"], [["a", math.pi]], digits=3)
    with open(csv_path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["name", "value"], ["a", repr(math.pi)]]
    assert "| a | 3.142 |" in md_path.read_text()


def test_page_links_figures_relative_and_escapes_html(tmp_path):
    figure = tmp_path / "figs" / "roc.png"
    figure.parent.mkdir()
    figure.write_bytes(b"png")
    page = Page("Results <all>")
    page.heading("One & two").text("first\n\nsecond").table(["k", "v"], [["<x>", 1.0]], source="a.csv")
    page.figure(figure, caption="ROC", source="a.csv")
    md, html = page.write(tmp_path / "site" / "report")
    assert md.suffix == ".md" and html.suffix == ".html"
    assert "![ROC](../figs/roc.png)" in md.read_text()
    text = html.read_text()
    assert "src='../figs/roc.png'" in text
    assert "<title>Results &lt;all&gt;</title>" in text and "&lt;x&gt;" in text
    assert "<p>first</p><p>second</p>" in text and "Source: a.csv" in text
