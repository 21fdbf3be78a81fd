"""Downloads, defined once: tables as CSV, Altair charts as PNG and SVG (rendered by vl-convert, no browser)."""

from __future__ import annotations

import pandas as pd


def _spec(chart) -> str:
    return chart if isinstance(chart, str) else chart.to_json()


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
