"""Downloads: CSV, and charts as PNG and SVG, including labels with control characters (vl-convert aborts the
whole process on some of them, so they are escaped before rendering)."""

import altair as alt
import pandas as pd

from core import export
from core.tokens import visible


def test_charts_with_control_characters_render_as_png_and_svg():
    frame = pd.DataFrame({"token": ["bell\x07", "esc\x1b", "c1\x85", "ok ␣", "中文"], "p": [0.1, 0.2, 0.3, 0.4, 0.5]})
    chart = alt.Chart(frame).mark_text().encode(x="p:Q", text="token:N")
    png = export.png_bytes(chart)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    svg = export.svg_bytes(chart).decode()
    assert svg.lstrip().startswith("<svg") and "bell\\x07" in svg and "c1\\x85" in svg and "中文" in svg


def test_csv_and_visible_labels():
    assert export.csv_bytes(pd.DataFrame({"a": [1], "b": ["x"]})) == b"a,b\n1,x\n"
    assert visible(" a\tb\n\x07") == "␣a⇥b⏎\\x07"
