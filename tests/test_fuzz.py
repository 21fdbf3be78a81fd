"""Bad input, everywhere a user can type or upload: each gets a clear UserError / st.error / one-line
CLI message (exit 2), never a traceback, and the app keeps working afterwards.

Prompts (empty, whitespace, 100k characters, control characters, mixed scripts, emoji, invalid
Unicode) through run_lens and the CLI; model specs (missing paths, a folder that is not a model,
``../`` paths, a hub id offline, a model needing remote code, broken configs and GGUF files);
numbers at their extremes (run_lens, the CLI, every page's numeric widgets at their minimum);
uploads (word lists, prompt pairs, corpora); the server's fixed model list; the GGUF cache written
atomically; hypothesis properties of token sets and prompt building on the tiny tokenizers.
"""

from __future__ import annotations

import json
import os
import random
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.cli import main as cli
from core.errors import UserError
from core.lens import run_lens
from core.models import load_model
from core.tokens import TokenSet, is_byte_token, token_str, word_token_set
from tests import tiny
from tests.apptest import private_home  # noqa: F401 (each test its own result store)
from tests.e2e.app_pages import discover

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
STYLES = ("llama", "sentencepiece", "gpt2")
HUGE = "a" * 100_000
WEIRD_PROMPTS = {
    "control": "bell\x07 null\x00 escape\x1b[31m red\x1b[0m del\x7f\r\n\ttab \x0b\x0c end",
    "mixed_scripts": 'Français: "fleur" - English: "flower" - 中文: "花" - हिन्दी: "फूल" - தமிழ்: "மலர்" - العربية',
    "emoji": "😀🚀👩‍👩‍👧‍👦 🇫🇷 flags and a ZWJ family, then text",
    "combining": "e\u0301 a\u0308 n\u0303 \u200b\u200d\u2060 zero widths \ufeff bom",
    "rtl": "\u202eevil\u202c שלום عليكم",
}
BLANK_PROMPTS = {"empty": "", "spaces": "   ", "whitespace": " \t\n\r \u3000 "}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    messages = [line for line in err if not line.startswith("[")]  # drop progress lines
    assert len(messages) == 1 and messages[0].startswith("error: "), err
    return messages[0]


# -- prompts -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=STYLES)
def handle(request):
    return tiny.handle("llama", style=request.param)


@pytest.mark.parametrize("name", WEIRD_PROMPTS)
def test_weird_prompts_are_decoded_like_any_other(handle, name):
    prompt = WEIRD_PROMPTS[name]
    result = run_lens(handle, prompt, positions="all", top_k=3)
    ids = handle.tokenizer(prompt)["input_ids"]
    assert result.token_ids[0] == ids and len(result.positions[0]) == len(ids)
    assert np.all((result.top_probs >= 0) & (result.top_probs <= 1 + 1e-6))
    # The lens at the last layer is the model itself, whatever the characters.
    logits = handle.logits(handle.encode(prompt))[0]
    np.testing.assert_array_equal(result.top_ids[-1, 0, :, 0], logits.argmax(-1).numpy())


@pytest.mark.parametrize("name", BLANK_PROMPTS)
def test_blank_prompts_are_refused(handle, name):
    with pytest.raises(UserError, match="empty"):
        run_lens(handle, BLANK_PROMPTS[name])
    with pytest.raises(UserError, match="empty"):
        run_lens(handle, ["fine", BLANK_PROMPTS[name]])


def test_no_prompt_and_invalid_unicode_are_refused(handle):
    with pytest.raises(UserError, match="no prompt"):
        run_lens(handle, [])
    with pytest.raises(UserError, match="not valid Unicode"):
        run_lens(handle, "bytes from a shell \udcff\udcfe")


def test_a_100k_character_prompt_is_refused_by_the_context(handle):
    with pytest.raises(UserError, match="longer than the model's context of 256"):
        run_lens(handle, HUGE)


def test_the_prompt_cap_is_configurable(monkeypatch):
    handle = tiny.handle("llama")
    prompt = "one two three four five six seven eight nine ten"
    n_tokens = len(handle.tokenizer(prompt)["input_ids"])
    monkeypatch.setenv("LAYERSCOPE_MAX_PROMPT_TOKENS", str(n_tokens - 1))
    with pytest.raises(UserError, match=f"at most {n_tokens - 1} tokens"):
        handle.encode(prompt)
    monkeypatch.setenv("LAYERSCOPE_MAX_PROMPT_TOKENS", str(n_tokens))
    assert handle.encode(prompt).lengths == [n_tokens]
    monkeypatch.setenv("LAYERSCOPE_MAX_PROMPT_TOKENS", "0")  # only the model's context
    assert handle.encode(prompt).lengths == [n_tokens]
    monkeypatch.setenv("LAYERSCOPE_MAX_PROMPT_TOKENS", "lots")
    with pytest.raises(UserError, match="whole number"):
        handle.encode(prompt)


def test_cli_on_the_default_model_with_weird_and_bad_prompts(gemma, capsys):
    for prompt in WEIRD_PROMPTS.values():
        assert cli(["lens", "--prompt", prompt, "--top-k", "2", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert len(out["layers"]) == gemma.n_layers + 1 and out["position"] == len(out["tokens"]) - 1
        assert all(0 <= top["prob"] <= 1 for layer in out["layers"] for top in layer["top"])
    for prompt, message in [("", "empty"), (" \t\n", "empty"), ("\udcff", "not valid Unicode"),
                            (HUGE, "12501 tokens; this installation looks at most 4096")]:
        assert cli(["lens", "--prompt", prompt]) == 2
        assert message in one_line_error(capsys)


# -- numbers at their extremes ----------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    (dict(top_k=0), "top-k"), (dict(top_k=-1), "top-k"), (dict(top_k=1001), "top-k"), (dict(top_k=10**18), "top-k"),
    (dict(positions=[10**9]), "outside the prompt"), (dict(positions=[-10**9]), "outside the prompt"),
    (dict(positions=[]), "no positions"), (dict(positions="some"), "positions must be"),
    (dict(batch_size=0), "batch size"), (dict(targets=[[10**9]]), "outside the vocabulary"),
    (dict(targets=[[-1]]), "outside the vocabulary"),
])
def test_lens_numbers_out_of_range_are_refused(kwargs, message):
    with pytest.raises(UserError, match=message):
        run_lens(tiny.handle("llama"), "one two three", **kwargs)


def test_top_k_up_to_a_small_vocabulary_and_not_beyond():
    handle = tiny.handle("gpt2", style="gpt2")
    result = run_lens(handle, "one two", top_k=handle.vocab_size)
    np.testing.assert_allclose(result.top_probs.sum(-1), 1.0, atol=1e-4)  # the whole vocabulary
    with pytest.raises(UserError, match=f"between 1 and {handle.vocab_size}"):
        run_lens(handle, "one two", top_k=handle.vocab_size + 1)


def test_lens_extremes_that_are_allowed(gemma):
    result = run_lens(gemma, "1 2 3", positions=[0, -1], top_k=1000, batch_size=10**6)
    assert result.top_ids.shape == (gemma.n_layers + 1, 1, 2, 1000)
    assert np.all(np.diff(result.top_probs, axis=-1) <= 1e-7)  # sorted, most likely first


@pytest.mark.parametrize("argv, message", [
    (["--top-k", "0"], "top-k"), (["--top-k", str(10**30)], "top-k"), (["--position", str(10**30)], "outside the prompt"),
    (["--position", "-99"], "outside the prompt"), (["--top-k", "ten"], "invalid int value"),
    (["--dtype", "float8"], "invalid choice"), (["--device", "tpu"], "invalid choice"),
])
def test_cli_numbers_out_of_range(gemma, capsys, argv, message):
    if message.startswith("invalid"):  # argparse's own checks: SystemExit(2) with one line
        with pytest.raises(SystemExit) as exit_info:
            cli(["lens", "--prompt", "1 2 3", *argv])
        assert exit_info.value.code == 2
    else:
        assert cli(["lens", "--prompt", "1 2 3", *argv]) == 2
    assert message in one_line_error(capsys)


def test_cli_out_of_memory_is_one_line(monkeypatch, capsys):
    import torch

    import core.analyses.lens.analysis
    import core.analyses.lens.command

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(core.analyses.lens.command, "load_from_args", lambda args: tiny.handle("llama"))
    monkeypatch.setattr(core.analyses.lens.analysis, "run_lens", exhausted)
    assert cli(["lens", "--prompt", "one two"]) == 1
    assert "out of memory" in one_line_error(capsys)


# -- model specs ---------------------------------------------------------------------------------------


def _remote_code_model(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "layerscope_custom",
        "architectures": ["CustomForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_custom.CustomConfig",
                     "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"},
    }))
    (folder / "configuration_custom.py").write_text("raise SystemExit('remote code ran')\n")
    return folder


def _bad_specs(tmp: Path) -> dict[str, tuple[str, str]]:
    """name -> (spec, words the message must contain)."""
    (tmp / "not_a_model").mkdir()
    (tmp / "not_a_model" / "notes.txt").write_text("hello")
    (tmp / "weights.bin").write_bytes(os.urandom(64))
    (tmp / "empty.gguf").write_bytes(b"")
    (tmp / "garbage.gguf").write_bytes(os.urandom(4096))
    (tmp / "bad_config").mkdir()
    (tmp / "bad_config" / "config.json").write_text("{ this is not json")
    (tmp / "bert").mkdir()
    (tmp / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return {
        "missing_path": (str(tmp / "no" / "such" / "model"), "not found"),
        "not_a_model_dir": (str(tmp / "not_a_model"), "no config.json"),
        "dotdot_missing": ("../../definitely-not-here", "not found"),
        "dotdot_inside": (str(tmp / "not_a_model" / ".." / "not_a_model" / ".." / "no-model"), "not found"),
        "dotdot_existing_dir": (os.path.relpath(tmp / "not_a_model"), "no config.json"),
        "not_gguf_file": (str(tmp / "weights.bin"), "not a .gguf"),
        "empty_gguf": (str(tmp / "empty.gguf"), "could not be read as a GGUF"),
        "garbage_gguf": (str(tmp / "garbage.gguf"), "could not be read as a GGUF"),
        "broken_config": (str(tmp / "bad_config"), "could not load"),
        "unsupported_architecture": (str(tmp / "bert"), "not supported"),
        "hub_id_offline": ("meta-llama/Llama-2-7b-hf", "HF_HUB_OFFLINE=1"),
        "bare_hub_id_offline": ("some-model-nobody-has", "HF_HUB_OFFLINE=1"),
        "remote_code": (str(_remote_code_model(tmp / "remote")), "trust_remote_code"),
        "blank": ("   ", "no model given"),
    }


@pytest.fixture(scope="module")
def bad_specs(tmp_path_factory):
    return _bad_specs(tmp_path_factory.mktemp("specs"))


SPEC_NAMES = [
    "missing_path", "not_a_model_dir", "dotdot_missing", "dotdot_inside", "dotdot_existing_dir", "not_gguf_file",
    "empty_gguf", "garbage_gguf", "broken_config", "unsupported_architecture", "hub_id_offline",
    "bare_hub_id_offline", "remote_code", "blank",
]


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_bad_model_specs_are_one_clear_message(bad_specs, tmp_path, monkeypatch, capsys, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path / "home"))  # GGUF attempts write nothing elsewhere
    spec, words = bad_specs[name]
    with pytest.raises(UserError, match=words.replace(".", r"\.")):
        load_model(spec)
    assert cli(["lens", "--model", spec, "--prompt", "hi"]) == 2
    assert words in one_line_error(capsys)
    converted = tmp_path / "home" / "converted"
    assert not converted.exists() or not any(converted.iterdir())  # no half-written cache left behind


def test_remote_code_is_not_run_even_when_asked_without_its_files(bad_specs):
    """The refusal comes from reading the config: the model's own code file is never executed."""
    spec, _ = bad_specs["remote_code"]
    with pytest.raises(UserError):
        load_model(spec)  # configuration_custom.py would raise SystemExit if it ran


# -- uploads ---------------------------------------------------------------------------------------


def _parsers():
    from core.analyses.quanta.corpus import corpus_from_bytes
    from core.analyses.sequences import parse_pairs
    from core.analyses.train.corpora import decode_text
    from core.analyses.translation.wordlist import parse_words

    return {
        "word list": lambda raw: parse_words(raw.decode("utf-8", errors="replace"), "upload.csv"),
        "prompt pairs": lambda raw: parse_pairs(raw.decode("utf-8", errors="replace")),
        "quanta corpus": lambda raw: corpus_from_bytes("upload.txt", raw),
        "quanta jsonl": lambda raw: corpus_from_bytes("upload.jsonl", raw),
        "tinylm corpus": lambda raw: decode_text("upload.txt", raw),
    }


UPLOADS = {
    "empty": b"",
    "blank_lines": b"\n\n  \n",
    "binary": bytes(random.Random(0).randrange(256) for _ in range(20_000)),
    "nul_bytes": b"fr,zh\n\x00\x00,\x00\n",
    "wrong_columns": b"french,chinese\nfleur,\xe8\x8a\xb1\n",
    "one_column": b"fr\nfleur\n",
    "duplicates": "fr,zh\nfleur,花\nfleur,花\n".encode(),
    "ragged_rows": "fr,zh,en\nfleur,花\neau,水,water,extra\n".encode(),
    "quotes_and_newlines": 'fr,zh\n"fl""eur",花\n"two\nlines",水\n'.encode(),
    "huge": ("fr,zh\n" + "".join(f"mot{i},字{i}\n" for i in range(200_000))).encode(),
    "bad_json": b'{"text": "fine"}\n{not json\n',
}


@pytest.mark.parametrize("upload", UPLOADS)
@pytest.mark.parametrize("parser", ["word list", "prompt pairs", "quanta corpus", "quanta jsonl", "tinylm corpus"])
def test_uploads_are_read_or_refused_with_a_user_error(parser, upload):
    try:
        result = _parsers()[parser](UPLOADS[upload])
    except UserError as err:
        assert str(err) and "\n" not in str(err)[:200]
        return
    assert result is not None
    if upload in ("empty", "blank_lines", "binary", "nul_bytes", "wrong_columns", "one_column", "duplicates"):
        assert parser != "word list", f"a word list upload '{upload}' was accepted"


@settings(max_examples=80, deadline=None)
@given(raw=st.binary(max_size=400) | st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_upload_bytes_are_read_or_refused_with_a_user_error(raw):
    for parse in _parsers().values():
        try:
            parse(raw)
        except UserError:
            pass


# -- the server's fixed model list ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return tiny.save(tmp_path_factory.mktemp("tiny-offered"), seed=5)


def test_a_fixed_model_list_is_all_users_can_pick_and_never_runs_remote_code(tiny_folder, bad_specs, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import ui.model

    offered = [str(tiny_folder), "gemma-3-270m"]
    monkeypatch.setenv("LAYERSCOPE_MODELS", " , ".join(offered) + " ,")
    options_seen = []
    real_load_model = ui.model.load_model

    def recording_load_model(spec, options, progress=None):
        options_seen.append((spec, options))
        return real_load_model(spec, options, progress=progress)

    monkeypatch.setattr(ui.model, "load_model", recording_load_model)
    ui.model._load.clear()
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["model_choice"] = str(tiny_folder)
    at.session_state["model_trust_remote_code"] = True  # left over from elsewhere: must be ignored
    at.run()
    assert not at.exception and not at.error
    picker = at.selectbox(key="model_choice")
    assert picker.options == offered
    free_form = {w.key for w in list(at.sidebar.checkbox) + list(at.sidebar.text_input)}  # the page's inputs aside
    assert not free_form & {"model_trust_remote_code", "model_custom"}  # no "trust remote code", no free-form model path
    assert at.sidebar.selectbox(key="model_choice").options == offered
    assert options_seen and all(not options.trust_remote_code for _, options in options_seen)
    assert len(at.dataframe[0].value) == 3 + 1  # the offered tiny model's lens, embeddings + 3 layers

    sneaky = AppTest.from_file(APP, default_timeout=300)  # a session whose state names an unlisted path
    sneaky.session_state["model_spec"] = bad_specs["remote_code"][0]
    sneaky.session_state["model_choice"] = ui.model.CUSTOM
    sneaky.run()
    assert not sneaky.exception
    assert sneaky.selectbox(key="model_choice").value in offered  # the picker fell back to an offered model
    ui.model._load.clear()


# -- every page's numeric widgets at their minimum -----------------------------------------------------------


PAGES = discover()


@pytest.mark.parametrize("app_page", PAGES, ids=[p.name for p in PAGES])
def test_every_page_with_its_numbers_at_their_minimum(gemma, app_page):
    """Each number input and slider at its smallest value, then the page's run button: results or st.error."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=600)
    if not app_page.default:
        at.switch_page(app_page.script)
    at.run()
    assert not at.exception, at.exception
    changed = 0
    for widget in list(at.number_input) + list(at.slider):
        if not widget.disabled and widget.min is not None and not isinstance(widget.value, (tuple, list)):
            widget.set_value(widget.min)
            changed += 1
    primary = [b for b in at.button if b.proto.type == "primary" and not b.disabled]
    if primary:
        primary[0].click()
    before = set(threading.enumerate())
    at.run()
    for thread in set(threading.enumerate()) - before:  # background work the page started (e.g. training)
        thread.join(timeout=300)
    assert not at.exception, f"{app_page.script} at its minimum settings: {at.exception}"
    assert changed or not primary, f"{app_page.script} has a run button but no numeric widget was found"
    errors = [e.value for e in at.error]
    assert all("This is a bug" not in e for e in errors), errors


# -- the GGUF conversion cache is written atomically ----------------------------------------------------------


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A .gguf path whose 'conversion' yields a tiny Llama: transformers' GGUF readers are replaced
    (the file's bytes never matter to convert()); saving, marking and renaming are the real code."""
    import transformers

    model, tokenizer = tiny.model("llama", seed=7)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", staticmethod(lambda *a, **k: tokenizer))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", staticmethod(lambda *a, **k: model))
    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path / "home"))
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + bytes(64))
    return path, model


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("interruption", [OSError("No space left on device"), KeyboardInterrupt()])
def test_an_interrupted_conversion_leaves_nothing_half_written(fake_gguf, monkeypatch, interruption):
    from core.models import gguf_cache

    path, model = fake_gguf
    real_save = type(model).save_pretrained

    def save_then_fail(self, folder, *args, **kwargs):
        real_save(self, folder, *args, **kwargs)  # the weights are on disk, the tokenizer and marker are not
        raise interruption

    monkeypatch.setattr(type(model), "save_pretrained", save_then_fail)
    with pytest.raises(type(interruption)):
        gguf_cache.convert(path)
    target = gguf_cache.cached_folder(path)
    assert not target.exists()
    assert _leftovers(target.parent) == []  # the temporary folder is gone too

    monkeypatch.setattr(type(model), "save_pretrained", real_save)  # the next try converts from scratch
    folder = gguf_cache.convert(path)
    assert folder == target and gguf_cache.is_complete(folder)
    assert _leftovers(target.parent) == [target.name]


def test_a_corrupt_cache_is_detected_and_rebuilt(fake_gguf):
    import torch

    from core.models import gguf_cache
    from core.models.loading import wrap_model

    path, model = fake_gguf
    folder = gguf_cache.convert(path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a truncated file
    assert not gguf_cache.is_complete(folder)
    rebuilt = gguf_cache.convert(path)
    assert gguf_cache.is_complete(rebuilt)
    (rebuilt / gguf_cache.MARKER).unlink()  # a folder without its completion marker
    assert not gguf_cache.is_complete(rebuilt)
    rebuilt = gguf_cache.convert(path)
    loaded = type(model).from_pretrained(rebuilt)  # the model class itself: the Auto loaders are replaced here
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert wrap_model(loaded, tiny.tokenizer("llama"), "rebuilt").n_layers == 3


# -- hypothesis: token sets and prompt building -------------------------------------------------------------------


WORDS = sorted({w.strip('".,:-') for line in tiny.CORPUS for w in line.split()} - {""})
word_strategy = st.one_of(
    st.sampled_from(WORDS),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=10),
).filter(lambda w: w.strip())


def _not_text(tokenizer, token_id: int) -> bool:
    """Byte pieces, pieces of a character and unknown/special tokens: ids that are not a piece of text."""
    text = tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
    return is_byte_token(tokenizer, token_id) or "\ufffd" in text or token_id in tokenizer.all_special_ids


@pytest.mark.parametrize("style", STYLES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(word=word_strategy)
def test_word_token_set_properties(style, word):
    tokenizer = tiny.tokenizer(style)
    token_set = word_token_set(tokenizer, word)
    assert isinstance(token_set, TokenSet) and token_set.word == word.strip()
    assert word_token_set(tokenizer, f"  {word}\t") == token_set  # surrounding whitespace never matters
    assert all(0 <= i < len(tokenizer) for i in token_set.ids)
    stripped = word.strip()
    own = [t for t in tokenizer(stripped, add_special_tokens=False)["input_ids"]
           if token_str(tokenizer, t).strip() and tokenizer.convert_ids_to_tokens(t).strip("▁Ġ ")]
    if own:
        assert own[0] in token_set.ids  # the first token of the word as the tokenizer writes it
    for token_id in token_set.ids:  # every member begins the word
        if not _not_text(tokenizer, token_id):
            text = tokenizer.decode([token_id], clean_up_tokenization_spaces=False).strip()
            assert stripped.startswith(text), (token_id, text)
    assert token_set.first_byte_only == (bool(token_set.ids) and all(is_byte_token(tokenizer, i) for i in token_set.ids))


@pytest.mark.parametrize("blank", ["", " ", "\t\n", "\u3000"])
def test_word_token_set_of_a_blank_word_is_refused(blank):
    with pytest.raises(ValueError):
        word_token_set(tiny.tokenizer("llama"), blank)


prompt_strategy = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda p: p.strip()
)


@pytest.mark.parametrize("style", STYLES)
@settings(max_examples=40, deadline=None)
@given(prompts=st.lists(prompt_strategy, min_size=1, max_size=4))
def test_encode_left_pads_each_prompt_to_its_own_tokens(style, prompts):
    handle = _handles(style)
    batch = handle.encode(prompts)
    width = batch.input_ids.shape[1]
    for row, prompt in enumerate(prompts):
        ids = handle.tokenizer(prompt)["input_ids"]
        assert batch.lengths[row] == len(ids) and width == max(batch.lengths)
        assert batch.input_ids[row, width - len(ids):].tolist() == ids
        assert batch.attention_mask[row].tolist() == [0] * (width - len(ids)) + [1] * len(ids)
        assert batch.position_ids[row, -1].item() == len(ids) - 1
        assert batch.padded_index(row, -1) == width - 1 and batch.padded_index(row, 0) == width - len(ids)


_HANDLES = {}


def _handles(style):
    if style not in _HANDLES:
        _HANDLES[style] = tiny.handle("llama", style=style)
    return _HANDLES[style]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_translation_prompts(data):
    from core.analyses.translation import Settings as TranslationSettings
    from core.analyses.translation.prompts import TASKS, build_prompt
    from core.analyses.translation.wordlist import LANGUAGES, load_words

    words = load_words()
    codes = list(words.languages)
    source, target = data.draw(st.sampled_from(codes)), data.draw(st.sampled_from(codes))
    task = data.draw(st.sampled_from(TASKS))
    shots = data.draw(st.integers(0, min(8, len(words) - 1)))
    seed = data.draw(st.integers(0, 2**31 - 1))
    index = data.draw(st.integers(0, len(words) - 1))
    chosen = TranslationSettings(source=source, target=target, latent="en", task=task, shots=shots, seed=seed).resolved()
    chosen.validate()
    prompt = build_prompt(words, index, chosen)
    assert prompt == build_prompt(words, index, chosen)  # deterministic
    lines = prompt.split("\n")
    assert len(lines) == shots + 1
    query = lines[-1]
    assert query.startswith(f'{LANGUAGES[chosen.source].name}: "{words.words[chosen.source][index]}"')
    assert query.endswith('"') and LANGUAGES[chosen.target].name in query
    answers = [line.rsplit('"', 2)[-2] for line in lines[:-1]]  # each demonstration ends with its answer
    assert all(a in words.words[chosen.target] for a in answers)
    if task == "cloze":
        assert all("___" in line for line in lines)
