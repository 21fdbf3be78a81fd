"""The Numerals and arithmetic page under AppTest: accuracy, the layer profile, the drill-down and downloads."""

from pathlib import Path

from tests.apptest import chart_specs, private_home  # noqa: F401 (each test its own result store)

APP = str(Path(__file__).resolve().parents[3] / "streamlit_app.py")


def test_page_renders_accuracy_layers_and_drill_down(gemma):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("pages/arithmetic.py")
    at.run()
    assert not at.exception and not at.error
    _widget(at.slider, "Problems").set_value(4)
    _widget(at.multiselect, "Numeral systems to score").set_value(["arabic", "devanagari", "tamil"])
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    specs = chart_specs(at)
    assert len(specs) == 4  # accuracy bars, layer curves, top-k grid, heatmap
    assert '"bar"' in specs[0] and '"line"' in specs[1]
    accuracy = at.dataframe[0].value
    assert list(accuracy["numeral system"]) == ["Western Arabic (0-9)", "Devanagari (०-९)", "Tamil (௦-௯)"]
    assert set(accuracy["n"]) == {4}
    ids = [b.proto.id for b in at.get("download_button")]  # a widget's id ends with its key
    for key in ("arith_accuracy:csv", "arith_accuracy:png", "arith_accuracy:svg", "arith_answers:csv",
                "arith_layers_devanagari:csv", "arith_layers_devanagari:png", "arith_problem_0:svg"):
        assert any(i.endswith(key) for i in ids), key
    _widget(at.selectbox, "Problem").set_value(2).run()  # drill into another problem
    assert not at.exception and not at.error


def _widget(widgets, label):
    return next(w for w in widgets if w.label == label)


