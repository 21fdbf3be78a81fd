"""Links: a page's settings in its URL reopen the same widgets and the same result in another session, from the
store with no forward pass (even while the model is still loading after a restart), or computed again when the
model's weights changed; tampered links get one line and the page's defaults; a damaged stored file is skipped."""

from __future__ import annotations

import time

import pytest

import core.analyses.lens.analysis as lens_analysis
from tests.apptest import widget
from tests.ui.conftest import link_of, ok, open_app, save_tiny


def run_lens(at, prompt: str, top_k: int = 3):
    at.text_area[0].input(prompt)
    widget(at.slider, "Top-k tokens per layer").set_value(top_k)
    widget(at.button, "Run the lens").click().run()
    return ok(at)


def loaded(gate) -> None:
    """Let the gated load go, and wait for it."""
    import ui.model

    gate.set()
    while ui.model.LOADS.running():
        time.sleep(0.05)


def captions(at) -> str:
    return " | ".join(c.value for c in at.caption)


def test_a_link_reopens_the_widgets_and_the_stored_result_without_a_forward_pass(tiny_folder, monkeypatch):
    first = run_lens(ok(open_app({"model": str(tiny_folder)})), "one two three four", top_k=3)
    link = link_of(first)
    assert link["prompt"] == "one two three four" and link["top_k"] == "3" and "logit_lens" in link["run"].split(",")
    assert link["model"] == str(tiny_folder) and "Computed in" in captions(first)
    table = first.dataframe[0].value

    def forward(*args, **kwargs):
        raise AssertionError("the lens ran a forward pass")

    monkeypatch.setattr(lens_analysis, "run_lens", forward)
    second = ok(open_app(link))  # another visitor, another browser
    assert second.text_area[0].value == "one two three four"
    assert widget(second.slider, "Top-k tokens per layer").value == 3
    assert "From this server's store" in captions(second) and "no forward pass" in captions(second)
    assert second.dataframe[0].value.equals(table)


def test_after_a_restart_the_stored_result_shows_while_the_model_loads_then_is_confirmed(tiny_folder, restart):
    first = run_lens(ok(open_app({"model": str(tiny_folder)})), "Monday Tuesday Wednesday")
    link, table = link_of(first), first.dataframe[0].value
    gate = restart()  # the server restarts; loading the model now waits for the gate
    started = time.monotonic()
    second = ok(open_app(link, timeout=30))
    assert time.monotonic() - started < 20  # nothing waited for the model
    assert second.dataframe[0].value.equals(table)
    assert "The model is still loading" in captions(second)
    assert any("Loading" in c.value for c in second.sidebar.caption)
    loaded(gate)
    ok(second.run())
    assert "From this server's store" in captions(second) and "still loading" not in captions(second)
    assert second.dataframe[0].value.equals(table)


def test_new_weights_under_the_same_spec_are_computed_again_once_loaded(tiny_folder, restart, monkeypatch):
    first = run_lens(ok(open_app({"model": str(tiny_folder)})), "one two three")
    link = link_of(first)
    save_tiny(tiny_folder, seed=11)  # the folder's weights change while the server is down
    gate = restart()
    second = ok(open_app(link, timeout=30))
    assert "still loading" in captions(second)  # the remembered fingerprint found the old result
    forwards = []
    real = lens_analysis.run_lens
    monkeypatch.setattr(lens_analysis, "run_lens", lambda *a, **k: forwards.append(1) or real(*a, **k))
    loaded(gate)
    ok(second.run(timeout=60))
    assert forwards and "weights changed" in captions(second)


LINKS = [
    ({"top_k": "99"}, "Top-k tokens per layer must be between 1 and 20, got 99"),
    ({"top_k": "many"}, "Top-k tokens per layer must be a number"),
    ({"lens": "magic"}, "Lens cannot be 'magic'"),
    ({"prompt": "x" * 20_001}, "more than a link may carry"),
    ({"lens": "tuned", "rows": "sublayer"}, "the tuned lens reads whole layers only"),  # Settings.validate()
]


@pytest.mark.parametrize("params, message", LINKS, ids=["range", "number", "choice", "length", "validate"])
def test_a_tampered_link_gets_one_line_and_the_default_widgets(tiny_folder, params, message):
    at = open_app({"model": str(tiny_folder), "run": "logit_lens", **params})
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("This link cannot be opened as it is:")
    assert message in at.error[0].value
    assert widget(at.slider, "Top-k tokens per layer").value == 5
    assert at.text_area[0].value == "The Eiffel Tower is in the city of"
    assert widget(at.radio, "Lens").value == "logit" and widget(at.radio, "Rows").value == "layer"
    assert at.dataframe  # the default view, computed as on any first visit
    assert "top_k" not in link_of(at) and "lens" not in link_of(at)


def test_a_link_whose_numbers_validate_badly_is_refused_on_another_page(tiny_folder):
    at = open_app({"model": str(tiny_folder), "lo": "9", "hi": "1", "run": "arithmetic"}, page="pages/arithmetic.py")
    assert not at.exception
    assert len(at.error) == 1 and "This link cannot be opened as it is" in at.error[0].value
    assert widget(at.number_input, "Smallest operand").value == 1 and widget(at.number_input, "Largest operand").value == 9
    assert "press **Run**" in at.info[0].value  # nothing was run


def test_a_link_to_a_model_this_server_does_not_offer_names_it(tiny_folder, monkeypatch):
    monkeypatch.setenv("LAYERSCOPE_MODELS", str(tiny_folder))
    at = open_app({"model": "llama-2-70b", "prompt": "hello", "run": "logit_lens"})
    assert not at.exception
    assert len(at.error) == 1 and "'llama-2-70b', which this server does not offer" in at.error[0].value
    assert at.text_area[0].value == "The Eiffel Tower is in the city of"  # the defaults, on the offered model
    assert at.selectbox(key="model_choice").value == str(tiny_folder)


def test_a_damaged_stored_result_is_skipped_with_a_warning_and_computed_again(tiny_folder, private_home):
    first = run_lens(ok(open_app({"model": str(tiny_folder)})), "one two three")
    for file in (private_home / "results" / "files").glob("*.lsr"):
        file.write_bytes(file.read_bytes()[:100])  # truncated, as by a full disk
    second = open_app(link_of(first))
    assert not second.exception and not second.error
    assert any("could not be read" in w.value for w in second.warning)
    assert "computed again" in captions(second)
    assert second.dataframe[0].value.equals(first.dataframe[0].value)


def test_attribution_and_side_by_side_come_back_with_the_link(tiny_folder, monkeypatch):
    first = ok(open_app({"model": str(tiny_folder)}))
    widget(first.button, "Attribute").click().run()
    widget(first.text_input, "Prompt B").input("one two")
    ok(widget(first.button, "Compare").click().run())
    link = link_of(first)
    assert set(link["run"].split(",")) == {"logit_lens", "attribute", "compare"} and link["compare.prompt_b"] == "one two"
    metric = first.metric[0].value

    import core.analyses.attribute as attribution

    def forward(*args, **kwargs):
        raise AssertionError("a forward pass")

    monkeypatch.setattr(lens_analysis, "run_lens", forward)
    monkeypatch.setattr(attribution, "run", forward)
    second = ok(open_app(link))
    assert second.metric[0].value == metric and widget(second.text_input, "Prompt B").value == "one two"
    assert second.dataframe[-1].value.equals(first.dataframe[-1].value)
    assert captions(second).count("From this server's store") == 3


def test_a_link_whose_prompt_is_over_the_token_cap_gets_the_defaults(tiny_folder, monkeypatch):
    from tests import tiny

    default = len(tiny.tokenizer("llama")("The Eiffel Tower is in the city of")["input_ids"])
    monkeypatch.setenv("LAYERSCOPE_MAX_PROMPT_TOKENS", str(default + 2))
    at = open_app({"model": str(tiny_folder), "prompt": "one two three four " * 20, "run": "logit_lens"})
    assert not at.exception
    assert len(at.error) == 1 and "LAYERSCOPE_MAX_PROMPT_TOKENS" in at.error[0].value
    assert at.error[0].value.startswith("This link cannot be opened as it is:")
    assert at.text_area[0].value == "The Eiffel Tower is in the city of" and at.dataframe
