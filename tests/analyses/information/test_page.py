"""The Journey of information page under AppTest on the default model: a small run shows its charts and
tables; a bad setting is one st.error."""

from pathlib import Path

from tests.apptest import chart_specs, private_home  # noqa: F401 (each test its own result store)

ROOT = Path(__file__).resolve().parents[3]


def open_page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=300)
    at.switch_page("pages/information.py")
    at.run()
    assert not at.exception and not at.error
    return at


def test_page_runs_and_shows_charts_and_tables(gemma):
    at = open_page()
    assert at.title[0].value == "🧭 Journey of information" and "press **Run**" in at.info[0].value
    inputs = {n.label: n for n in at.number_input}
    inputs["Tokens read"].set_value(80)
    inputs["Concepts (rows of the word list)"].set_value(12)
    at.button[0].click().run()
    assert not at.exception and not at.error
    specs = chart_specs(at)
    assert len(specs) == 7  # knows, bits, compression, retrieval, pair heatmap, PCA, tokens per word
    assert '"line"' in specs[0] and '"rect"' in specs[4] and '"circle"' in specs[5] and '"bar"' in specs[6]
    layers = at.dataframe[-1].value
    assert list(layers["layer"]) == list(range(19)) and layers["current_token_acc"].iloc[0] == 1.0
    assert [m.value for m in at.metric[:1]] == ["80"]
    ids = [b.proto.id for b in at.get("download_button")]
    assert any(i.endswith("information_layers:csv") for i in ids)
    at.radio[0].set_value("token").run()  # the PCA of the text's tokens instead of the words: no new run
    assert not at.exception and not at.error and '"circle"' in chart_specs(at)[5]


def test_one_language_is_one_error(gemma):
    at = open_page()
    at.multiselect[0].set_value(["en"])
    at.button[0].click().run()
    assert not at.exception
    assert len(at.error) == 1 and "at least two different languages" in at.error[0].value
