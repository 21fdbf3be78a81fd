"""The Circuits page under Streamlit's AppTest, on the real default model: draw the routes, pin, check."""

from types import SimpleNamespace

from streamlit.testing.v1 import AppTest
from tests.analyses.circuits.helpers import random_transcoders, save
from tests.apptest import APP, chart_specs, private_home, settled_navigation, widget  # noqa: F401 (autouse fixtures)




def click(at, label: str) -> None:
    widget(at.button, label).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]


def test_circuits_page_draws_routes_pins_and_checks(tmp_path):
    at = AppTest.from_file(APP, default_timeout=600).switch_page("pages/circuits.py").run()
    assert not at.exception and not at.error
    assert at.title[0].value.startswith("🕸️ Circuits")
    assert "Draw the graph" in at.info[0].value
    widget(at.text_area, "Prompt").set_value("1 2 3 4 ")
    click(at, "Draw the graph")
    specs = chart_specs(at)
    assert specs and '"circle"' in specs[0] and '"rule"' in specs[0]
    metrics = {m.label: m for m in at.metric}
    assert metrics["Target"].value == "'5'" and metrics["Heaviest head"].value.startswith("L12H0")
    ids = [b.proto.id for b in at.get("download_button")]
    assert any(i.endswith("circuit_routes:svg") for i in ids) and any(i.endswith("circuit_routes_nodes:csv") for i in ids)
    pins = widget(at.multiselect, "Pinned nodes (the subgraph to check)")
    heads = [o for o in pins.options if o.startswith("L12H0")]
    pins.set_value(heads[:1]).run()
    click(at, "Check the pinned nodes")
    metrics = {m.label: m for m in at.metric}
    clean, model, predicted = (float(metrics[k].value) for k in ("Clean logit difference", "Model, intervened",
                                                                  "Graph's prediction"))
    assert model < clean and predicted < clean  # L12H0 carries the sequence: both see the drop

    # An attribution graph through (random, small) transcoders for every block of the default model.
    folder = save(random_transcoders(SimpleNamespace(n_layers=18, d_model=640, spec="gemma-3-270m"), width=64, k=4),
                  tmp_path / "transcoders")
    widget(at.radio, "Graph").set_value("attribution")
    widget(at.text_input, "Transcoders folder (empty: this model's own)").set_value(str(folder))
    click(at, "Draw the graph")
    metrics = {m.label: m for m in at.metric}
    assert 0 < float(metrics["Replacement score"].value) < 1 and 0 < float(metrics["Completeness score"].value) < 1
    assert '"circle"' in chart_specs(at)[0] and any(o.startswith("F") for o in widget(at.multiselect, "Pinned nodes "
                                                                                      "(the subgraph to check)").options)
