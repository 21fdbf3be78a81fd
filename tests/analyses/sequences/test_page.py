"""The Sequence continuation page under Streamlit's AppTest, on the real default model."""

from pathlib import Path

from streamlit.testing.v1 import AppTest
from tests.apptest import chart_specs, private_home, settled_navigation  # noqa: F401 (autouse: own store, settled pages)

APP = str(Path(__file__).resolve().parents[3] / "streamlit_app.py")




def download_ids(at) -> list[str]:
    return [b.proto.id for b in at.get("download_button")]  # a widget's id ends with its key


def click(at, label: str) -> None:
    """Press the button labelled ``label`` and rerun; the page must show no exception and no error."""
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]


def test_sequences_page_sweep_circuit_and_inspector(gemma):
    at = AppTest.from_file(APP, default_timeout=600).switch_page("pages/sequences.py").run()
    assert not at.exception and not at.error
    assert at.title[0].value.startswith("🔢 Sequence continuation")
    assert "press **Run**" in at.info[0].value

    next(s for s in at.slider if s.label == "Prompt pairs").set_value(2)
    click(at, "Run")
    assert any("kept 6 of 97 candidate prompts" in c.value for c in at.caption)
    specs = chart_specs(at)
    # attribution tab: heatmap + MLP bars; exact tab (top-12): heatmap + bars; the method scatter
    assert len(specs) == 5 and sum('"rect"' in s for s in specs) == 2 and sum('"circle"' in s for s in specs) == 1
    ranked = at.dataframe[1].value  # the first tab's ranked table (the prompts table comes first)
    assert len(ranked) == 18 * 4 + 18 and ranked["change"].is_monotonic_increasing
    assert {m.label for m in at.metric} >= {"Full logit difference", "Most important head", "Spearman ρ (heads)"}
    assert at.get("download_button")
    for key in ("seq_numerals_attribution:csv", "seq_numerals_prompts_attribution:csv", "seq_numerals_ablation_heads:png",
                "seq_numerals_ablation_heads:svg", "seq_numerals_attribution_mlps:svg", "seq_numerals_methods:png"):
        assert any(i.endswith(key) for i in download_ids(at)), key

    click(at, "Find the circuit")
    circuit_metric = next(m for m in at.metric if m.label.endswith("heads in circuit"))
    assert 1 <= int(circuit_metric.value) < 72 and "% of the full" in circuit_metric.delta
    assert len(chart_specs(at)) == 6
    assert any(i.endswith("seq_circuit:svg") for i in download_ids(at))

    click(at, "Inspect the head")
    specs = chart_specs(at)
    assert len(specs) == 8 and any("Attention of L" in s for s in specs) and any("Successor score of" in s for s in specs)
    ranking = at.dataframe[-1].value
    assert len(ranking) == 10 and ranking["score"].is_monotonic_decreasing
    best = next(m for m in at.metric if m.label == "Most important head").value  # the inspector's default head
    assert any(i.endswith(f"seq_attention_{best}:png") for i in download_ids(at)), best
    assert any(i.endswith("seq_successor_scores:csv") for i in download_ids(at))
