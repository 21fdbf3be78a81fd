"""The app shell and the Logit lens page under Streamlit's AppTest, on the real default model."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from tests.apptest import chart_specs

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")


@pytest.fixture
def app(gemma):
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    return at


def test_logit_lens_page_renders_heatmap_table_and_curves(app):
    assert not app.exception and not app.error
    assert app.title[0].value.startswith("🔎 Logit lens")
    specs = chart_specs(app)
    assert len(specs) == 2 and '"rect"' in specs[0] and '"line"' in specs[1]
    table = app.dataframe[0].value
    assert len(table) == 19  # one row per layer, embeddings to output
    assert table.iloc[0]["#1"] == "␣Paris"  # the top row is the output layer
    assert app.get("download_button")


def test_new_prompt_and_empty_prompt(app):
    app.text_area[0].input("1 2 3 4 5")
    app.button[0].click().run()  # the form's submit button
    assert not app.exception and not app.error
    assert app.dataframe[0].value.iloc[0]["#1"] in {"␣", "␣6", "6"}
    app.text_area[0].input("   ")
    app.button[0].click().run()
    assert not app.exception
    assert "empty" in app.warning[0].value
