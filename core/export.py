"""Downloads, defined once: tables as CSV, Altair charts as PNG and SVG (rendered by vl-convert, no browser)."""

from __future__ import annotations

import re

import pandas as pd


# JSON escapes of control characters (json writes them as \u00XX): vl-convert aborts the whole process on
# some of them in chart text, so exports show them as the literal text \xXX instead.
_CONTROL = re.compile(r"\\u00(0[0-8bcefBCEF]|1[0-9a-fA-F]|7[fF]|[89][0-9a-fA-F])")
_RAW_CONTROL = re.compile("[\x7f-\x9f]")  # not escaped by JSON writers that keep non-ASCII as it is


def _spec(chart) -> str:
    spec = chart if isinstance(chart, str) else chart.to_json()
    spec = _CONTROL.sub(lambda m: "\\\\x" + m.group(1).lower(), spec)
    return _RAW_CONTROL.sub(lambda m: f"\\\\x{ord(m.group()):02x}", spec)


def can_render() -> bool:
    """Whether charts can be exported as images here (vl-convert is installed)."""
    import importlib.util

    return importlib.util.find_spec("vl_convert") is not None


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """A table as UTF-8 CSV without the index."""
    return frame.to_csv(index=False).encode("utf-8")


def png_bytes(chart, scale: float = 2.0) -> bytes | None:
    """An Altair chart (or its Vega-Lite JSON) as PNG; None when vl-convert is not installed."""
    try:
        import vl_convert
    except ImportError:
        return None
    return vl_convert.vegalite_to_png(_spec(chart), scale=scale)


def svg_bytes(chart) -> bytes | None:
    """An Altair chart (or its Vega-Lite JSON) as SVG; None when vl-convert is not installed."""
    try:
        import vl_convert
    except ImportError:
        return None
    return vl_convert.vegalite_to_svg(_spec(chart)).encode("utf-8")
