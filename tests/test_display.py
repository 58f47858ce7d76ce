"""The colour-coded matrix display: deterministic HTML and an aligned text fallback."""

from __future__ import annotations

import math
import re

import pytest
import torch

from insideout.display import show, side_by_side, table


def test_text_table_is_aligned_and_captioned():
    v = show([[1.0, -0.5], [0.25, 0.0]], "W", col_labels=["a", "b"], row_labels=["x", "yy"])
    text = repr(v)
    lines = text.splitlines()
    assert lines[0] == "W · 2×2 · colour scale ±1.0000"
    assert lines[1] == "         a        b"
    assert lines[2] == "x   1.0000  -0.5000"
    assert lines[3] == "yy  0.2500   0.0000"


def test_shapes_vectors_scalars_and_tolist():
    assert show([1.0, 2.0, 3.0]).shape == (3,)
    assert "(3,)" in show([1.0, 2.0, 3.0]).caption
    assert show(2.5).shape == ()
    t = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    assert show(t, "t").rows == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert show([[1, 2]]).to_text().splitlines()[-1].split() == ["0", "1", "2"]  # ints printed as ints


def test_html_colours_are_a_symmetric_diverging_scale():
    h = show([[-2.0, 0.0, 2.0, 1.0]], "s")._repr_html_()
    colours = re.findall(r"<td style=\"background:(#[0-9a-f]{6})(?:;color:(#[0-9a-f]{6}))?\">", h)
    assert colours[0] == ("#2166ac", "#ffffff")  # most negative: full blue, white text
    assert colours[1] == ("#ffffff", "")  # zero: white, the table's dark text
    assert colours[2] == ("#b2182b", "#ffffff")  # most positive: full red
    assert colours[3][0] == "#d88c95"  # halfway to red (216.5 rounds to 216)
    assert "<b>s</b>" in h and "1×4" in h


def test_masked_values_decimals_and_no_negative_zero():
    v = show([[0.123456, -math.inf], [-0.00001, math.nan]], decimals=5)
    text = v.to_text()
    assert "0.12346" in text and "-inf" in text and "nan" in text
    assert "-0.00000" not in text and "0.00001" not in text.replace("-0.00001", "")
    assert "#e6e6e6" in v._repr_html_()


def test_output_is_deterministic_and_escaped():
    a = show([[1.0, 2.0]], "<b>x</b>", row_labels=["<bos>"])
    b = show([[1.0, 2.0]], "<b>x</b>", row_labels=["<bos>"])
    assert a._repr_html_() == b._repr_html_() and repr(a) == repr(b)
    assert "&lt;bos&gt;" in a._repr_html_() and "<b>&lt;b&gt;x&lt;/b&gt;</b>" in a._repr_html_()
    assert "0x" not in repr(a) and " at 0x" not in a._repr_html_()


def test_side_by_side_and_table():
    row = side_by_side(show([[1.0]], "a"), show([[2.0]], "b"))
    assert "display:flex" in row._repr_html_()
    assert repr(row).count("colour scale") == 2
    t = table([["tok_emb.weight", "(6, 16)", 96], ["ln_f.bias", "(16,)", 16]], ["name", "shape", "count"], "card")
    lines = repr(t).splitlines()
    assert lines[0] == "card"
    assert lines[3] == "tok_emb.weight  (6, 16)     96"
    assert "<th" in t._repr_html_()


@pytest.mark.parametrize("bad, message", [
    ([], "empty"),
    ([[1.0, 2.0], [3.0]], "row 1 has 1"),
    ([[[1.0]]], "more than 2 dimensions"),
    ([["a"]], "numbers"),
])
def test_bad_input_is_named(bad, message):
    with pytest.raises(ValueError, match=message):
        show(bad)


def test_label_count_is_checked():
    with pytest.raises(ValueError, match="row labels"):
        show([[1.0], [2.0]], row_labels=["a"])


def test_wide_and_tall_matrices_are_shown_in_blocks():
    wide = show([[float(j) for j in range(40)] for _ in range(2)], "w")
    text = wide.to_text()
    assert "[columns 0–15]" in text and "[columns 32–39]" in text
    assert max(len(line) for line in text.splitlines()) < 160
    html_ = wide._repr_html_()
    assert html_.count("<table") == 3 and "columns 16–31" in html_
    tall = show([[1.0, 2.0] for _ in range(20)], "t", row_labels=[f"r{i}" for i in range(20)])
    assert "[rows r0–r15]" in tall.to_text() and "[rows r16–r19]" in tall.to_text()
    assert "columns" not in tall.to_text()
    whole = show([[float(j) for j in range(40)]], "w", wrap=None).to_text()
    assert "[" not in whole.splitlines()[1] and len(whole.splitlines()) == 3


def test_significant_digits_in_scientific_form():
    v = show([[0.0123456, -0.000456, 0.0, 2.5e-17]], "g", sig=3)
    cells = v.to_text().splitlines()[-1].split()[1:]
    assert cells == ["1.23e-2", "-4.56e-4", "0", "2.50e-17"]
    assert "±1.23e-2" in v.caption
    assert len(show([[1.0] * 12], sig=2).col_blocks) == 2  # scientific entries wrap at 8 columns


@pytest.mark.parametrize("kwargs, message", [
    (dict(sig=0), "sig=0"),
    (dict(sig=True), "sig=True"),
    (dict(wrap=0), "wrap=0"),
    (dict(wrap="wide"), "wrap='wide'"),
])
def test_bad_format_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        show([[1.0]], **kwargs)
