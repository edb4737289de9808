"""Hostile input, round 3 (#30): spreadsheet-safe CSV, a hash memo that cannot lie, bodies cut by a minimum rate,
a killed train re-run to the same model."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

TRICKY = ["=1+1", "+1+1", "-1+2", "@SUM(A1)", "\tx", "\rx", "'=x", "''=x", "'", "''", "", "'abc", "plain", "-",
          "=", "-0.25", "+3", "1e-5", "-1e5", "-.5", "-2+3+cmd|' /C calc'!A0", "'-0.25", "caf\u00e9"]


def test_every_cell_round_trips_and_no_formula_reaches_a_spreadsheet(tmp_path):
    from frugalvision._io import csv_text, escape_cell, read_csv, unescape_cell

    for v in TRICKY:
        assert unescape_cell(escape_cell(v)) == v, v
    df = pd.DataFrame({"label": TRICKY, "p": np.linspace(-1, 1, len(TRICKY))})
    (tmp_path / "t.csv").write_bytes(csv_text(df).encode())
    with open(tmp_path / "t.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    for label, p in rows[1:]:
        # A spreadsheet evaluates a cell starting with = + - @ (or tab/CR) unless it is a plain number.
        if label and label[0] in "=+-@\t\r":
            float(label)
        assert float(p) == pytest.approx(float(p))  # the number column is written as numbers, never quoted
    assert rows[1 + TRICKY.index("-0.25")][0] == "-0.25"  # text that is a plain number stays a number
    assert rows[1 + TRICKY.index("-1+2")][0] == "'-1+2"
    assert rows[1 + TRICKY.index("'=x")][0] == "''=x"  # a raw leading quote is kept distinguishable
    assert any(r[1].startswith("-") for r in rows[1:])  # negative probabilities are not escaped
    back = read_csv(tmp_path / "t.csv")
    assert back["label"].tolist() == TRICKY


def test_raw_output_on_request(tmp_path, monkeypatch):
    from frugalvision._io import csv_rows_text, csv_text

    monkeypatch.setenv("FRUGALVISION_RAW_CSV", "1")
    assert csv_text(pd.DataFrame({"=a": ["=b"]})) == "=a\n=b\n"
    assert csv_rows_text(["=a"], [{"=a": "=b"}]) == "=a\n=b\n"
