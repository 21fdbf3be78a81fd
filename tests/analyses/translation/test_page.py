"""The Translation latent language page under AppTest: a small run on the default model, its charts,
table and downloads, and the drill-down into one word."""

from pathlib import Path

from tests.apptest import chart_specs, private_home  # noqa: F401 (each test its own result store)

ROOT = Path(__file__).resolve().parents[3]


def test_page_runs_a_small_batch_and_drills_down(gemma):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=300)
    at.switch_page("pages/translation.py")
    at.run()
    assert not at.exception and not at.error
    assert at.title[0].value == "🌐 Translation latent language" and "press **Run**" in at.info[0].value
    at.number_input[0].set_value(3)  # words
    at.number_input[1].set_value(1)  # demonstrations: a short prompt keeps the all-positions heatmap cheap
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert [m.value for m in at.metric[:2]] == ["3", "0"]
    specs = chart_specs(at)
    assert len(specs) == 3 and '"area"' in specs[0] and '"line"' in specs[0] and '"rect"' in specs[1]
    assert "target: Chinese (zh)" in specs[0]
    table = at.dataframe[0].value
    assert list(table["source_word"]) == ["eau", "feu", "soleil"]
    assert table["prompt"].str.endswith('中文: "').all() and table["p_target_final"].between(0, 1).all()
    ids = [b.proto.id for b in at.get("download_button")]  # a widget's id ends with its key
    for key in ("translation_fr_zh_words:csv", "translation_fr_zh:png", "translation_fr_zh:svg",
                "translation_fr_zh_word_0:svg", "translation_fr_zh_word_0_heatmap:png"):
        assert any(i.endswith(key) for i in ids), key
    word = [s for s in at.selectbox if s.label == "Word"][0]
    word.set_value(1).run()
    assert not at.exception and not at.error
    assert any('Français: "feu" - 中文: "' in c.value for c in at.code)  # the drill-down's prompt


