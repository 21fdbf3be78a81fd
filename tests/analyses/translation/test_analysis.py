"""Latent language of translation: token sets on three tokenizer styles, prompts, drops, the lens
at the last layer equal to the model's own probabilities and the CLI contract (the page: test_page.py)."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from core.analyses.translation import Settings, run
from core.analyses.translation.analysis import summarize
from core.analyses.translation.drill import drill_down
from core.analyses.translation.prompts import SLOTS, build_prompt, language_tokens, plan_words
from core.analyses.translation.wordlist import SHIPPED_LANGUAGES, load_words, parse_words
from core.cli import main
from core.lens import run_lens
from core.models.handle import Batch
from tests import tiny
# Hindi and Tamil words begin with the same UTF-8 byte 0xE0; Chinese with 0xE8/0xE6; Russian 0xD1.
SMALL = parse_words(
    "en,fr,hi,ta,zh,ru\n"
    "flower,fleur,फूल,மலர்,花,цветок\n"
    "water,eau,पानी,தண்ணீர்,水,вода\n"
    "five,cinq,पाँच,ஐந்து,五,пять\n"
    "one,un,एक,ஒன்று,一,один\n"
    "Paris,Paris,पेरिस,பாரிஸ்,巴黎,Париж\n",
    origin="small.csv",
)


def pieces(tokenizer, ids):
    return sorted(tokenizer.convert_ids_to_tokens(list(ids)))


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine thread hand-offs cost 100x their matmuls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- token sets ---------------------------------------------------------------------------------


def test_byte_fallback_sets_tell_hindi_from_tamil_by_the_second_byte():
    tok = tiny.tokenizer("llama")
    hindi, tamil, chinese = (language_tokens(tok, w) for w in ("फूल", "மலர்", "花"))
    # Both words begin with the byte 0xE0 alone; as two pieces they differ: Devanagari E0 A4, Tamil E0 AE.
    assert hindi.whole == tamil.whole == frozenset()
    assert tok.convert_ids_to_tokens(list(hindi.lead)) == ["<0xE0>", "<0xA4>"]
    assert tok.convert_ids_to_tokens(list(tamil.lead)) == ["<0xE0>", "<0xAE>"]
    assert tok.convert_ids_to_tokens(list(chinese.lead)) == ["<0xE8>", "<0x8A>"]
    assert not hindi.overlaps(tamil) and hindi.overlaps(language_tokens(tok, "पानी"))  # same first two bytes
    # Latin words: whole tokens only, and never the lone "▁" that begins every word.
    fleur = language_tokens(tok, "fleur")
    assert pieces(tok, fleur.whole) == ["▁f"] and fleur.lead is None
    assert pieces(tok, language_tokens(tok, "Paris").whole) == ["P", "▁Pa"]


def test_sentencepiece_without_byte_fallback_cannot_write_unseen_scripts():
    tok = tiny.tokenizer("sentencepiece")
    assert pieces(tok, language_tokens(tok, "fleur").whole) == ["f", "fl", "▁f"]
    hindi = language_tokens(tok, "फूल")
    assert hindi.empty  # only <unk>, which must never count as the word
    plan = plan_words(tok, Settings(source="fr", target="hi", shots=1, words=SMALL))
    assert plan.kept == [] and set(plan.dropped["reason"]) == {"tokenizer cannot write the word"}


def test_byte_level_bpe_uses_two_pieces_for_split_characters():
    tok = tiny.tokenizer("gpt2")
    assert pieces(tok, language_tokens(tok, "fleur").whole) == ["f", "fl", "Ġf"]
    flower, water = language_tokens(tok, "फूल"), language_tokens(tok, "पानी")
    assert flower.whole == frozenset() and flower.lead[0] == water.lead[0]  # the shared fragment "à¤"
    assert flower.lead != water.lead
    assert tok.decode([flower.lead[0]]) == "\ufffd"
    tamil = language_tokens(tok, "மலர்")  # this tokenizer learned ம as one token
    assert pieces(tok, tamil.whole) == ["à®®"] and tamil.lead is None


def test_source_set_leaves_out_what_target_and_latent_share_with_it():
    tok = tiny.tokenizer("sentencepiece")
    words = parse_words("fr,en,de\nfleur,flower,Blume\n", origin="x.csv")
    plan = plan_words(tok, Settings(source="fr", target="en", latent="en", shots=0, words=words))
    sets = plan.kept[0].sets
    assert sets["latent"] == sets["target"] and pieces(tok, sets["target"].whole) == ["f", "fl", "▁f"]
    assert sets["source"].whole == frozenset()  # fleur's f, fl, ▁f all begin "flower" too
    plan = plan_words(tok, Settings(source="en", target="de", latent="fr", shots=0, words=words))
    assert pieces(tok, plan.kept[0].sets["source"].whole) == []  # flower vs fleur (latent)


# -- prompts and drops --------------------------------------------------------------------------


def test_prompts_follow_the_paper_format_and_do_not_depend_on_the_limit():
    words = load_words()
    settings = Settings(source="fr", target="zh", shots=4, seed=0)
    prompt = build_prompt(words, 7, settings)  # fleur
    lines = prompt.split("\n")
    assert len(lines) == 5 and lines[-1] == 'Français: "fleur" - 中文: "'
    for line in lines[:-1]:
        src, tgt = line.removeprefix('Français: "').removesuffix('"').split('" - 中文: "')
        i = words.words["fr"].index(src)
        assert i != 7 and words.words["zh"][i] == tgt
    assert build_prompt(words, 7, Settings(shots=4, seed=0, limit=8)) == prompt
    assert build_prompt(words, 7, Settings(shots=4, seed=1)) != prompt
    repeat = Settings(source="fr", target="hi", task="repetition", shots=1).resolved()
    assert repeat.source == "hi" and Settings(task="cloze").resolved().source == "fr"
    assert build_prompt(words, 7, repeat).split("\n")[-1] == 'हिन्दी: "फूल" - हिन्दी: "'
    cloze = build_prompt(words, 7, Settings(target="ta", task="cloze", shots=1))
    assert cloze.split("\n")[-1] == 'Français: "fleur" - தமிழ்: "___" ⇒ "'
    assert cloze.split("\n")[0].count('"') == 6 and "___\" ⇒ \"" in cloze.split("\n")[0]


def test_words_dropped_when_target_and_latent_overlap_or_latent_is_a_prefix():
    tok = tiny.tokenizer("sentencepiece")
    words = parse_words("fr,de,en\nfleur,Blume,flower\neau,fa,f\nfeu,Feuer,fire\npied,Pfote,paw\n", origin="x.csv")
    plan = plan_words(tok, Settings(source="fr", target="de", shots=1, words=words))
    dropped = dict(zip(plan.dropped["source_word"], plan.dropped["reason"]))
    assert dropped == {"eau": "latent word is a prefix of the target word"}
    plan = plan_words(tok, Settings(source="de", target="fr", shots=1, words=words))
    dropped = dict(zip(plan.dropped["source_word"], plan.dropped["reason"]))
    assert dropped == {"Blume": "target and latent token sets overlap", "Feuer": "target and latent token sets overlap",
                       "Pfote": "target and latent token sets overlap"}  # eau vs f: no shared token
    assert plan.dropped.set_index("source_word").loc["Blume", "detail"] == "'f', ' f', 'fl'"


# -- the lens -------------------------------------------------------------------------------------


def model_probability(handle, plan):
    """Per kept word, the model's own (not the lens's) probability of each language's set: p(whole) +
    p(first piece) * p(second piece | prompt + first piece), both from full forward passes."""
    out = np.zeros((len(plan.kept), len(SLOTS)))
    for w, word in enumerate(plan.kept):
        ids = handle.tokenizer(word.prompt)["input_ids"]
        probs = {}
        for extra in [()] + [(s.lead[0],) for s in word.sets.values() if s.lead]:
            row = torch.tensor([ids + list(extra)])
            batch = Batch(row, torch.ones_like(row), [row.shape[1]])
            probs[extra] = handle.logits(batch)[0, -1].softmax(-1)
        for i, slot in enumerate(SLOTS):
            s = word.sets[slot]
            out[w, i] = float(probs[()][sorted(s.whole)].sum()) if s.whole else 0.0
            if s.lead:
                out[w, i] += float(probs[()][s.lead[0]] * probs[(s.lead[0],)][s.lead[1]])
    return out


def test_last_layer_equals_the_models_own_probability_with_byte_pieces(one_thread):
    handle = tiny.handle("llama")
    settings = Settings(source="ta", target="hi", latent="zh", shots=2, batch_size=2, words=SMALL)
    result = run(handle, settings)
    assert result.n_words == 5 and result.n_two_piece == 5
    plan = plan_words(handle.tokenizer, settings)
    own = model_probability(handle, plan)
    np.testing.assert_allclose(result.lang_probs[-1], own, atol=1e-5)
    assert result.curves()["p_target"].iloc[-1] == pytest.approx(own[:, 0].mean(), abs=1e-6)
    # Hindi (E0 A4) and Tamil (E0 AE) are separate masses that together fit inside p(<0xE0>).
    e0 = handle.tokenizer.convert_tokens_to_ids("<0xE0>")
    lens = run_lens(handle, list(result.words["prompt"]), token_sets=[[{e0}]] * result.n_words)
    bytes_only = [w for w, word in enumerate(plan.kept) if not word.sets["target"].whole | word.sets["source"].whole]
    assert len(bytes_only) == 4  # தண்ணீர் begins with த, a whole token of this tokenizer
    p_e0 = lens.set_probs[:, bytes_only, 0, 0]
    hindi, tamil = result.lang_probs[:, bytes_only, 0], result.lang_probs[:, bytes_only, 2]
    assert np.all(hindi + tamil <= p_e0 + 1e-6) and not np.allclose(hindi, tamil, rtol=0.1)


def test_batching_and_sorting_by_length_do_not_change_numbers(one_thread):
    handle = tiny.handle("gpt2", style="gpt2")
    settings = Settings(source="fr", target="ru", shots=3, energy=True, words=SMALL)
    one = run(handle, replace(settings, batch_size=1))
    many = run(handle, settings)
    np.testing.assert_allclose(one.lang_probs, many.lang_probs, atol=1e-5)
    np.testing.assert_allclose(one.entropy_bits, many.entropy_bits, atol=1e-4)
    np.testing.assert_allclose(one.energy, many.energy, atol=1e-5)
    assert one.top_tokens == many.top_tokens
    curves = many.curves()
    values = many.lang_probs[:, :, 0]
    half = 1.96 * values.std(axis=1, ddof=1) / np.sqrt(values.shape[1])
    np.testing.assert_allclose(curves["p_target_hi"], np.clip(values.mean(1) + half, 0, 1), atol=1e-9)
    assert list(curves.columns[:4]) == ["layer", "p_target", "p_target_lo", "p_target_hi"]
    frame = many.word_frame()
    assert len(frame) == many.n_words * (handle.n_layers + 1) and frame["prompt"].str.endswith('Русский: "').all()


def test_summary_finds_peak_and_overtaking_layer():
    curves = pd.DataFrame({"layer": range(6), "p_target": [0, 0, 0.05, 0.3, 0.2, 0.7],
                           "p_latent": [0, 0.05, 0.4, 0.25, 0.3, 0.1], "entropy_bits": [10, 10, 9, 4, 3, 2]})
    s = summarize(curves)
    assert (s.latent_peak_layer, s.latent_peak, s.latent_above_10pct_from, s.target_overtakes_at) == (2, 0.4, 2, 5)
    assert s.entropy_first_half_bits == pytest.approx(8.25)  # layers 0..3
    assert summarize(curves.assign(p_target=0.0)).target_overtakes_at is None


# -- the real default model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fr_zh(gemma):
    return run(gemma, Settings(source="fr", target="zh", limit=4, shots=2))


def test_gemma_final_layer_is_the_models_probability_of_the_target_set(gemma, fr_zh):
    own = model_probability(gemma, plan_words(gemma.tokenizer, fr_zh.settings))
    assert fr_zh.n_words == 4 and fr_zh.n_dropped == 0
    np.testing.assert_allclose(fr_zh.lang_probs[-1], own, atol=2e-4)
    assert fr_zh.curves()["p_target"].iloc[-1] == pytest.approx(own[:, 0].mean(), abs=1e-4)
    summary = fr_zh.summary()
    assert summary.target_final > 0.3 and summary.latent_final < 0.02  # it writes Chinese, not English


def test_gemma_drill_down_labels_tokens_by_language(gemma, fr_zh):
    detail = drill_down(gemma, fr_zh, 0, top_k=3)  # eau -> 水
    assert detail.prompt.endswith('Français: "eau" - 中文: "')
    assert len(detail.lens.positions[0]) == len(detail.lens.tokens[0])  # every position of the prompt
    top = detail.table[(detail.table["layer"] == 18) & (detail.table["rank"] == 1)].iloc[0]
    assert (top["token"], top["language"]) == ("水", "target: Chinese")
    assert len(detail.table) == 19 * 3


def test_cli_json_contract(gemma, capsys):
    code = main(["translate", "--model", "gemma-3-270m", "--source", "ta", "--target", "hi", "--limit", "2", "--shots", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(out) == {"model", "n_words", "n_dropped", "layers"}
    assert out["model"] == "gemma-3-270m" and out["n_words"] + out["n_dropped"] == 2
    assert [layer["layer"] for layer in out["layers"]] == list(range(19))
    for layer in out["layers"]:
        assert set(layer) == {"layer", "p_target", "p_latent", "p_source", "p_target_ci", "p_latent_ci", "entropy_bits"}
        for key in ("target", "latent"):
            lo, hi = layer[f"p_{key}_ci"]
            assert 0 <= lo <= layer[f"p_{key}"] <= hi <= 1
        assert layer["p_target"] + layer["p_latent"] + layer["p_source"] <= 1 + 1e-5 and layer["entropy_bits"] >= 0



def test_cli_every_pair_of_shipped_languages(tiny_folder, capsys, one_thread):
    for source in SHIPPED_LANGUAGES:
        for target in SHIPPED_LANGUAGES:
            if source == target:
                continue
            code = main(["translate", "--model", tiny_folder, "--source", source, "--target", target,
                         "--limit", "3", "--shots", "1", "--json"])
            captured = capsys.readouterr()
            assert code == 0, (source, target, captured.err)
            out = json.loads(captured.out)
            assert out["n_words"] >= 1 and out["n_words"] + out["n_dropped"] == 3 and len(out["layers"]) == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "xx"], "unknown language code 'xx'"),
        (["--shots", "17"], "shots must be between 0 and 16"),
        (["--limit", "0"], "at least 1"),
        (["--batch-size", "0"], "batch size must be at least 1"),
        (["--pairs", "PAIRS"], "has no column for 'en'"),
        (["--pairs", "BAD"], "row 3: zh 'dog' is written in Latin"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tiny_folder, tmp_path, capsys, args, message):
    (tmp_path / "pairs.csv").write_text("fr,zh\nchat,猫\nchien,狗\n", encoding="utf-8")
    (tmp_path / "bad.csv").write_text("fr,zh,en\nchat,猫,cat\nchien,dog,dog\n", encoding="utf-8")
    args = [str(tmp_path / "pairs.csv") if a == "PAIRS" else str(tmp_path / "bad.csv") if a == "BAD" else a for a in args]
    assert main(["translate", "--model", tiny_folder, *args, "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_cli_pairs_file_with_its_own_languages(tiny_folder, tmp_path, capsys, one_thread):
    (tmp_path / "pairs.csv").write_text("fr,zh\nchat,猫\nchien,狗\npoule,鸡\n", encoding="utf-8")
    code = main(["translate", "--model", tiny_folder, "--pairs", str(tmp_path / "pairs.csv"), "--latent", "fr",
                 "--shots", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["n_words"] == 3
    assert all(layer["p_source"] == layer["p_latent"] for layer in out["layers"])  # latent = source language


def test_cli_name_and_alias_print_what_run_returns(tiny_folder, capsys, one_thread):
    from core.models import load_model

    args = ["--model", tiny_folder, "--source", "ta", "--target", "hi", "--latent", "zh", "--limit", "4", "--shots", "1"]
    printed = []
    for name in ("translation", "translate"):
        assert main([name, *args, "--json"]) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1]
    result = run(load_model(tiny_folder), Settings(source="ta", target="hi", latent="zh", limit=4, shots=1))
    assert json.loads(printed[0]) == result.to_json()
    assert result.n_two_piece > 0  # the teacher-forced pass ran too
    frames = result.frames()
    assert set(frames) == {"curves", "words", "word_layers", "dropped"}
    assert len(frames["curves"]) == result.n_layers + 1 and len(frames["words"]) == result.n_words
    assert len(frames["word_layers"]) == result.n_words * (result.n_layers + 1)
    assert len(frames["dropped"]) == result.n_dropped == 4 - result.n_words


def test_settings_with_equal_word_lists_are_equal_and_hashable():
    text = "fr,zh\nchat,猫\nchien,狗\n"
    one, two = (Settings(words=parse_words(text, origin="a.csv")) for _ in range(2))
    assert one == two and hash(one) == hash(two)  # a page rerun parses the upload again: results stay fresh
    assert one != Settings(words=parse_words(text + "poule,鸡\n", origin="a.csv"))
