"""The Key–value lookup page under Streamlit's AppTest, on the real default model."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.apptest import chart_specs, private_home  # noqa: F401 (each test its own result store)

APP = str(Path(__file__).resolve().parents[3] / "streamlit_app.py")


def button(at, label):
    return next(b for b in at.button if b.label == label)


def test_default_run_shows_charts_and_tables_then_facts_trace(gemma):
    at = AppTest.from_file(APP, default_timeout=600)
    at.switch_page("pages/lookup.py")
    at.run()
    assert not at.exception and not at.error
    assert at.title[0].value.startswith("🗝️ Key–value lookup")
    assert "press **Run**" in at.info[0].value

    button(at, "Run").click().run()  # the default: K = 2, 4, 8, four prompts each, collisions and typos
    assert not at.exception and not at.error
    specs = chart_specs(at)
    assert len(specs) == 6 and sum('"line"' in s for s in specs) == 2 and sum('"rect"' in s for s in specs) == 1
    by_pairs = at.dataframe[0].value
    assert list(by_pairs["pairs"]) == [2, 4, 8] and list(by_pairs["n"]) == [4, 4, 4]
    assert len(at.dataframe[1].value) == 4  # the confirmed heads
    assert {m.label for m in at.metric} == {"Accuracy at K = 8", "Answer top-1 from layer", "Strongest confirmed head"}
    assert at.get("download_button")

    next(s for s in at.selectbox if s.label == "Pairs").set_value("codes")
    next(m for m in at.multiselect if m.label.startswith("K values")).set_value([64])
    button(at, "Run").click().run()  # 64 codes need 64 colours: one clear line, the app keeps going
    assert not at.exception and len(at.error) == 1
    assert "K=64 pairs need 64 distinct keys and values, but the codes → colours list has 30" in at.error[0].value

    next(r for r in at.radio if r.label == "Lookup").set_value("facts").run()
    next(n for n in at.number_input if n.label.startswith("Facts")).set_value(3)
    next(m for m in at.multiselect if m.label == "Restore").set_value(["residual"])
    button(at, "Run").click().run()
    assert not at.exception and not at.error
    assert any(s.value.startswith("Causal tracing: “The capital of France is the city of” → Paris") for s in at.subheader)
    specs = chart_specs(at)
    assert any("Restoring the residual stream" in s for s in specs)
    assert len(at.dataframe[-2].value) == 18 * 5  # the MLP neurons, then every prompt
