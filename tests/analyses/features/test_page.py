"""The Features page under Streamlit's AppTest on the real default model, with a small dictionary trained for it
(random weights aligned with real residuals, so features fire): the grid beside the FVU bars, one feature's
card, steering, and the page without any dictionary."""

from pathlib import Path

import torch
from streamlit.testing.v1 import AppTest

from core.features import save_dictionary
from tests.analyses.features.conftest import random_dictionary
from tests.apptest import chart_specs, settled_navigation  # noqa: F401 (autouse: settled pages)

APP = str(Path(__file__).resolve().parents[3] / "streamlit_app.py")




def click(at, label: str) -> None:
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]


def test_page_from_no_dictionary_to_grid_feature_card_and_steering(gemma, tmp_path, monkeypatch):
    from core.analyses.features import cards
    from core.analyses.sae.analysis import dictionaries_home

    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path))
    # as for a model without a shipped dictionary (the browser suite opens the page with the shipped one)
    monkeypatch.setattr("core.analyses.features.analysis.SHIPPED", tmp_path / "shipped")
    monkeypatch.setattr(cards, "CONTEXT_WINDOWS", 24)  # a smaller context sample: this test is about the page
    at = AppTest.from_file(APP, default_timeout=600).switch_page("pages/features.py").run()
    assert not at.exception and not at.error
    assert at.title[0].value.startswith("✨ Features")
    assert "No dictionary for gemma-3-270m yet" in at.info[0].value

    # decoder rows: real layer-9 residuals (BOS dropped), so the page shows features that fire
    residual = gemma.residuals(gemma.encode(["The Eiffel Tower is in the city of Paris, and the river is"]))[9, 0, 1:]
    d = random_dictionary(gemma.d_model, width=64, k=4, layer=9, model="gemma-3-270m")
    rows = torch.cat([residual, torch.randn(64 - len(residual), gemma.d_model)])
    d.W_dec = rows / rows.norm(dim=1, keepdim=True)
    d.W_enc = (d.W_dec.T / residual.norm(dim=1).mean()).contiguous()
    save_dictionary(d, dictionaries_home(gemma) / "resid-L9-test")

    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    specs = chart_specs(at)
    assert '"rect"' in specs[0] and "resid 9" in specs[0] and "fvu" in specs[0]
    assert at.header[0].value.startswith("Feature resid 9 · #")
    assert any("Top-activating contexts" in s.value for s in at.subheader)
    assert len(specs) == 4  # the grid + promoted, suppressed, density
    assert any(i.proto.id.endswith("features:csv") for i in at.get("download_button"))

    next(s for s in at.slider if s.label == "Tokens to generate").set_value(5)
    click(at, "Steer")
    assert any(s.value.startswith("Steering: add α") for s in at.subheader)
    assert any('"facet"' in s for s in chart_specs(at))
