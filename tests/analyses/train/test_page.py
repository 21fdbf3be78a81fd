"""The Train page (train from scratch) under Streamlit's AppTest: a short run completes, then every tool renders."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from tests.apptest import chart_specs

PAGE = str(Path(__file__).resolve().parents[3] / "pages" / "train.py")


def small_settings(at, steps=6):
    at.selectbox(key="train:corpus").set_value("synthetic")
    at.slider(key="train:layers").set_value(1)
    at.select_slider(key="train:d_model").set_value(32)
    at.select_slider(key="train:heads").set_value(2)
    at.select_slider(key="train:context").set_value(32)
    at.select_slider(key="train:batch").set_value(8)
    at.number_input(key="train:steps").set_value(steps)


@pytest.fixture
def page():
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def test_page_renders_before_training(page):
    assert page.title[0].value == "Next-token prediction, from scratch"
    assert page.button(key="train").disabled is False
    assert page.button(key="stop").disabled and page.button(key="resume").disabled
    assert "Train a model" in page.info[0].value


def test_short_training_run_completes_and_tools_render(page, layerscope_home):
    small_settings(page)
    page.button(key="train").click().run()
    assert not page.exception and not page.error
    run = page.session_state["result:train:train"].result  # the page's TrainingRun (ui.results.run_analysis)
    assert run.wait(120)
    page.run()
    assert not page.exception and not page.error
    metrics = {m.label: m.value for m in page.metric}
    assert metrics["Step (of 6)"] == "6"
    assert float(metrics["Validation loss"]) < 4.0 and float(metrics["Bigram baseline"]) > 0
    specs = chart_specs(page)
    assert any('"validation"' in s and '"bigram baseline"' in s for s in specs)  # loss chart with baseline
    assert any('probes solved' in s for s in specs)  # synthetic skills tracked
    assert any('"rect"' in s for s in specs)  # attention heatmaps
    assert any('"pc1"' in s for s in specs)  # PCA scatter

    page.text_area(key="train:generate.prompt").set_value("count: 1 2 3")
    page.button(key="generate").click().run()
    assert not page.exception and page.code[0].value.startswith("count: 1 2 3")
    assert len(page.code[0].value) > len("count: 1 2 3")

    page.button(key="save").click().run()
    assert not page.error, [e.value for e in page.error]
    assert "Saved to" in page.success[0].value
    saved = layerscope_home / "checkpoints" / "synthetic-char-1x32-seed0"
    assert (saved / "tinylm.json").is_file() and str(saved) in page.session_state["extra_models"]

    page.selectbox(key="train:checkpoint.path").set_value(str(saved))
    page.button(key="load").click().run()
    assert not page.exception and not page.error
    assert "Exploring checkpoint" in page.info[0].value


def test_bad_settings_show_an_error_not_a_traceback(page):
    small_settings(page)
    page.select_slider(key="train:heads").set_value(3)  # 32 is not divisible by 3
    page.button(key="train").click().run()
    assert not page.exception
    assert "divisible" in page.error[0].value
    page.selectbox(key="train:corpus").set_value("upload a text file…")
    page.select_slider(key="train:heads").set_value(2)
    page.button(key="train").click().run()
    assert "upload" in page.error[0].value
