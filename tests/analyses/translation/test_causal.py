"""Concept patching and language steering: a prompt patched into itself is unchanged, patching the last block's
output gives the source's output distribution, patching onward equals patching the last block's input, steering
with α = 0 changes nothing; the CLI contract on a tiny Llama folder and on the default model; bad input."""

import json

import numpy as np
import pytest
import torch

from core.analyses.translation import Settings, run
from core.analyses.translation.causal import WORDS, draw_pairs
from core.analyses.translation.patching import edited_finals, last_residuals, prompt_ids, row_site, word_probs
from core.analyses.translation.prompts import language_tokens
from core.analyses.translation.wordlist import parse_words
from core.cli import main
from tests import tiny

# Chinese and Hindi words are written in UTF-8 byte pieces by the tiny Llama tokenizer: the two-piece path runs.
# (Every Hindi word begins with the bytes E0 A4, so two Hindi words cannot be told apart: Chinese receives.)
WORDS_CSV = parse_words(
    "en,fr,de,es,zh,hi\n"
    "water,eau,Wasser,agua,水,पानी\n"
    "fire,feu,Feuer,fuego,火,आग\n"
    "moon,lune,Mond,luna,月亮,चाँद\n"
    "book,livre,Buch,libro,书,किताब\n"
    "house,maison,Haus,casa,房子,घर\n"
    "tree,arbre,Baum,árbol,树,पेड़\n"
    "dog,chien,Hund,perro,狗,कुत्ता\n"
    "red,rouge,rot,rojo,红,लाल\n",
    origin="small.csv",
)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def handle():
    return tiny.handle("llama")


def pairs_of(handle, **kwargs):
    settings = Settings(**{"source": "fr", "target": "hi", "causal": True, "into": ("de", "zh"), "shots": 2,
                           "words": WORDS_CSV, **kwargs})
    return draw_pairs(handle.tokenizer, settings)[0]


def test_patching_a_prompt_into_itself_changes_nothing(handle):
    pairs = pairs_of(handle)
    assert any(s.lead for p in pairs for s in p.sets)  # the teacher-forced second piece is patched too
    sources = prompt_ids(handle, [p.source_prompt for p in pairs])
    probs = word_probs(handle, sources, [p.sets for p in pairs], last_residuals(handle, sources))
    assert probs.shape == (handle.n_layers + 2, len(pairs), 3) and probs.min() > 0  # (a random model: p ~ 1e-6)
    np.testing.assert_allclose(probs, np.broadcast_to(probs[:1], probs.shape), rtol=1e-3, atol=1e-12)


def test_patching_the_last_block_output_gives_the_source_distribution(handle):
    pairs = pairs_of(handle)
    sources = prompt_ids(handle, [p.source_prompt for p in pairs])
    receivers = prompt_ids(handle, [p.receiver_prompt for p in pairs])
    values = last_residuals(handle, sources)
    finals = edited_finals(handle, receivers, values)  # [copy, pair, d_model]
    batch = handle.batch_of(sources)
    own = handle.logits(batch)[:, -1].softmax(-1)
    torch.testing.assert_close(finals[-1], values[-1])
    torch.testing.assert_close(handle.decode(finals[-1]).softmax(-1), own, atol=1e-5, rtol=1e-4)
    untouched = handle.logits(handle.batch_of(receivers))[:, -1].softmax(-1)
    torch.testing.assert_close(handle.decode(finals[0]).softmax(-1), untouched, atol=1e-5, rtol=1e-4)
    # Whole-token words: the patched output's p(word) is the source's own.
    latin = [[language_tokens(handle.tokenizer, w) for w in ("eau", "Wasser", "agua")]] * len(pairs)
    probs = word_probs(handle, receivers, latin, values)
    expected = np.array([[float(own[p, sorted(s.whole)].sum()) for s in latin[p]] for p in range(len(pairs))])
    np.testing.assert_allclose(probs[-1], expected, rtol=1e-3, atol=1e-12)
    assert not np.allclose(probs[0], expected, rtol=0.1, atol=0)


def test_patching_onward_equals_patching_the_last_block_input(handle):
    pairs = pairs_of(handle)
    sources = prompt_ids(handle, [p.source_prompt for p in pairs])
    receivers = prompt_ids(handle, [p.receiver_prompt for p in pairs])
    values = last_residuals(handle, sources)
    single = edited_finals(handle, receivers, values)
    onward = edited_finals(handle, receivers, values, onward=True)
    n = handle.n_layers
    for row in range(n):  # copy 1 + row: rows row..n−1 patched; only the value entering the last block survives
        torch.testing.assert_close(onward[1 + row], single[n], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(onward[n + 1], single[n + 1])
    assert not torch.allclose(single[1], single[n], atol=1e-3)  # patched alone, the rows differ
    assert row_site(0).kind == "resid_pre" and row_site(n).layer == n - 1


def test_steering_with_alpha_zero_changes_nothing_and_the_embedding_row_has_no_direction(handle):
    result = run(handle, Settings(source="fr", target="zh", shots=2, words=WORDS_CSV, steer=("de", "zh"), alpha=0.0))
    steering = result.steering
    assert steering.n_direction >= 2 and len(steering.prompts) >= 2
    np.testing.assert_allclose(steering.probs, np.broadcast_to(steering.probs[:1], steering.probs.shape), rtol=1e-3,
                               atol=1e-12)
    # Every prompt ends with the same token, so the X − Y difference at the embeddings is exactly 0.
    assert steering.direction_norm[0] == 0 and steering.direction_norm[1:].min() > 0
    moved = run(handle, Settings(source="fr", target="zh", shots=2, words=WORDS_CSV, steer=("de", "zh"), alpha=4.0))
    assert not np.allclose(moved.steering.probs[-1], moved.steering.probs[0], rtol=0.1, atol=0)



def test_cli_contract_on_a_llama_folder(tiny_folder, capsys):
    base = ["translation", "--model", tiny_folder, "--source", "fr", "--target", "zh", "--limit", "6", "--shots", "1", "--seed", "3"]
    assert main([*base, "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert set(plain) == {"model", "n_words", "n_dropped", "layers"}
    assert main([*base, "--causal", "--into", "de,es", "--steer", "de,zh", "--alpha", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {k: out[k] for k in plain} == plain  # the lens part is unchanged
    causal = out["causal"]
    assert causal["n_pairs"] == 6 and causal["into"] == ["de", "es"] and causal["onward"] is False
    assert [layer["layer"] for layer in causal["layers"]] == list(range(4))
    for layer in causal["layers"]:
        for name in WORDS:
            lo, hi = layer["ci"][f"p_{name}"]
            assert 0 <= lo <= layer[f"p_{name}"] <= hi <= 1
    assert causal["transfer_layer"] is None or 0 <= causal["transfer_layer"] <= 3
    assert set(causal["clean"]) == {f"p_{name}" for name in WORDS}
    steering = out["steering"]
    assert steering["x"] == "de" and steering["y"] == "zh" and steering["alpha"] == 2.0
    assert [layer["layer"] for layer in steering["layers"]] == list(range(4))
    assert set(steering["layers"][0]) == {"layer", "p_x", "p_y", "p_en", "ci", "direction_norm"}


@pytest.mark.parametrize("args, message", [
    (["--causal", "--into", "de,de"], "--into names the same language twice"),
    (["--causal", "--into", "de"], "--into takes two language codes"),
    (["--causal", "--into", "de,zh"], "answers in zh like the source prompt"),
    (["--causal"], "needs the receiving pair"),
    (["--into", "de,es"], "add --causal"),
    (["--causal", "--into", "de,xx"], "unknown language code 'xx'"),
    (["--steer", "de,de"], "--steer names the same language twice"),
    (["--steer", "de,es", "--alpha", "abc"], "invalid float value: 'abc'"),
    (["--steer", "de,es", "--alpha", "nan"], "alpha must be a finite number"),
    (["--causal", "--into", "de,es", "--pairs", "PAIRS"], "only 0 usable concept pair(s)"),
    (["--causal", "--into", "de,es", "--task", "cloze"], "use the translation task"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tiny_folder, tmp_path, capsys, args, message):
    # Every German and Spanish word begins with the same letters: no pair's words can be told apart.
    (tmp_path / "pairs.csv").write_text("en,fr,zh,de,es\ncat,chat,猫,Sand,Sal\ndog,chien,狗,Sonne,Sol\n", encoding="utf-8")
    args = [str(tmp_path / "pairs.csv") if a == "PAIRS" else a for a in args]
    try:
        code = main(["translation", "--model", tiny_folder, "--shots", "1", *args, "--json"])
    except SystemExit as exit_:  # argparse's own errors (a number that is not one)
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_gemma_last_row_reproduces_the_source_answer(gemma):
    settings = Settings(source="fr", target="zh", causal=True, into=("de", "es"), limit=2, shots=2)
    result = run(gemma, settings)
    causal = result.causal
    assert causal.n_pairs == 2
    pairs = draw_pairs(gemma.tokenizer, result.settings)[0]
    ids = prompt_ids(gemma, [p.source_prompt for p in pairs])
    own = gemma.logits(gemma.batch_of(ids))[:, -1].softmax(-1)
    for p, pair in enumerate(pairs):
        chinese = pair.sets[WORDS.index("a_source_lang")]
        assert not chinese.lead
        assert causal.probs[-1, p, 2] == pytest.approx(float(own[p, sorted(chinese.whole)].sum()), abs=1e-4)
    assert causal.probs[0, :, 1].min() > causal.probs[-1, :, 1].max()  # B is the answer until A's output replaces it


def test_frames_and_charts_of_both_studies(handle):
    from core.analyses.translation import charts

    result = run(handle, Settings(source="fr", target="hi", causal=True, into=("de", "zh"), shots=2, words=WORDS_CSV,
                                  steer=("de", "zh")))
    frames = result.frames()
    assert {"causal", "causal_pairs", "causal_prompts", "causal_dropped", "steering", "steering_prompts"} <= set(frames)
    n_rows = handle.n_layers + 1
    assert len(frames["causal"]) == n_rows and len(frames["causal_pairs"]) == result.causal.n_pairs * n_rows
    pair_means = frames["causal_pairs"].groupby("layer")["p_b"].mean().to_numpy()
    np.testing.assert_allclose(pair_means, frames["causal"]["p_b"], rtol=1e-9)
    for chart in (charts.causal_curves(result.causal, result.settings), charts.steering_curves(result.steering)):
        spec = chart.to_dict()
        assert len(spec["layer"]) == 2  # band + line
