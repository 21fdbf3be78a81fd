"""The app shell and the Logit lens page under Streamlit's AppTest: the default view on the real default model,
tracked tokens, sub-layer rows, direct logit attribution, side by side, and a tuned lens trained from the page."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests import tiny
from tests.apptest import chart_specs, private_home  # noqa: F401 (each test its own result store)

APP = str(Path(__file__).resolve().parents[3] / "streamlit_app.py")


def widget(widgets, label):
    return next(w for w in widgets if w.label == label)


def press(at, label):
    widget(at.button, label).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


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


def test_tracked_tokens_on_sublayer_rows_colour_the_grid(app):
    app.text_input[0].input('" Paris", London')
    widget(app.radio, "Rows").set_value("sublayer")
    widget(app.selectbox, "Colour the grid by").set_value("tracked token's probability")
    press(app, "Run the lens")
    specs = chart_specs(app)
    assert len(specs) == 3 and "tracked_prob" in specs[0] and "18 mlp" in specs[0] and "1 attn" in specs[0]
    assert "Tracked tokens' probability" in specs[2]
    assert len(app.dataframe[0].value) == 2 * 18 + 1  # embeddings + attention and MLP of 18 blocks


def test_direct_logit_attribution_and_side_by_side(app):
    press(app, "Attribute")
    metric = app.metric[0]
    assert metric.label.startswith("Logit") and f"sum to {metric.value}" in metric.delta
    specs = chart_specs(app)
    assert len(specs) == 4 and any('"rect"' in s and "head" in s for s in specs[2:])
    components = app.dataframe[1].value
    assert set(components["kind"]) >= {"embed", "head", "mlp"}
    assert abs(components["value"].sum() - float(metric.value)) < 2e-3
    widget(app.text_input, "Prompt B").input("The Colosseum is in the city of")
    press(app, "Compare")
    layers = app.dataframe[-1].value
    assert len(layers) == 19 and layers["kl_bits"].iloc[0] >= 0 and "kl_bits" in layers


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return tiny.save(tmp_path_factory.mktemp("tiny-lens"), seed=4)


def test_a_tuned_lens_is_trained_from_the_page_then_read(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path))
    import ui.model

    at = AppTest.from_file(APP, default_timeout=600)
    at.session_state["model_choice"] = ui.model.CUSTOM
    at.session_state["model_custom"] = str(tiny_folder)
    at.run()
    widget(at.radio, "Lens").set_value("tuned")
    widget(at.button, "Run the lens").click().run()
    assert "No tuned lens for" in at.info[0].value and not at.dataframe
    press(at, "Train a tuned lens")  # waits for the server's training job, then reads with the new lens
    assert list((tmp_path / "lenses").glob("*/params.pt"))
    specs = chart_specs(at)
    assert "tuned lens" in specs[0]
    assert len(at.dataframe[0].value) == 3 + 1
