"""core.models.prefetch: the tokenizer the CLI builds in a second process answers exactly as a local one,
and anything it does not answer is built here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core import cli
from core.models import gguf_cache, prefetch
from tests.models.tiny_gguf import write_tiny_gguf

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["the capital of France", "  two spaces\tand a tab\n\n", "你好 नम 12", "<start_of_turn>the<end_of_turn>",
         "<custom> cap ital", "x"]


@pytest.fixture
def converted(tmp_path, monkeypatch):
    """(gguf path, converted folder) of a tiny Gemma 3 with a SentencePiece vocabulary."""
    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path / "home"))
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf", "gemma3")
    return gguf, gguf_cache.convert(gguf)


@pytest.fixture
def remote(converted):
    gguf, folder = converted
    tokenizer = prefetch.start(str(gguf))
    assert tokenizer is not None
    assert prefetch.take(folder) is tokenizer and prefetch.take(folder) is None  # handed out once
    yield tokenizer
    tokenizer._stop()


def test_the_child_answers_as_the_local_tokenizer(converted, remote):
    assert remote and remote._attributes is None  # its truth does not wait for the child (as len() would)
    local = prefetch.converted_tokenizer(converted[1])
    for text in TEXTS:
        ids = local(text)["input_ids"]
        assert remote(text)["input_ids"] == ids
        assert remote(text, add_special_tokens=False).input_ids == local(text, add_special_tokens=False).input_ids
        assert remote.encode(text) == local.encode(text) and remote.tokenize(text) == local.tokenize(text)
        assert remote.decode(ids) == local.decode(ids)
        assert remote.decode(ids, skip_special_tokens=True) == local.decode(ids, skip_special_tokens=True)
        assert remote.convert_ids_to_tokens(ids) == local.convert_ids_to_tokens(ids)
        assert remote.convert_tokens_to_ids(local.convert_ids_to_tokens(ids)) == ids
        assert remote.decode(torch.tensor(ids)) == local.decode(ids)  # tensors travel as lists
    batch = [local(t)["input_ids"] for t in TEXTS]
    assert remote.batch_decode(batch) == local.batch_decode(batch)
    assert remote(TEXTS, padding=True)["attention_mask"] == local(TEXTS, padding=True)["attention_mask"]
    assert len(remote) == len(local) > 40
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "bos_token", "padding_side",
                 "all_special_ids", "model_max_length"):
        assert getattr(remote, name) == getattr(local, name), name
    assert remote._local is None and remote._process.poll() is None  # every answer came from the child
    assert remote._calls == 9 * len(TEXTS) + 3


def test_anything_else_builds_the_tokenizer_here(converted, remote):
    local = prefetch.converted_tokenizer(converted[1])
    assert remote.get_vocab() == local.get_vocab()
    assert remote._local is not None and remote._process is None  # built here; the child is stopped
    assert remote("the capital")["input_ids"] == local("the capital")["input_ids"]
    assert remote.decode([5, 6]) == local.decode([5, 6])


def test_tensors_and_attribute_changes_are_handled_here(converted, remote):
    local = prefetch.converted_tokenizer(converted[1])
    got = remote(["the", "the capital"], padding=True, return_tensors="pt")
    assert torch.equal(got["input_ids"], local(["the", "the capital"], padding=True, return_tensors="pt")["input_ids"])
    remote.padding_side = "right"
    assert remote.padding_side == "right" and remote._local.padding_side == "right"


def test_many_calls_move_the_tokenizer_here(converted, remote, monkeypatch):
    monkeypatch.setattr(prefetch, "MAX_REMOTE_CALLS", 3)
    local = prefetch.converted_tokenizer(converted[1])
    answers = [remote.decode([i]) for i in range(5, 10)]
    assert answers == [local.decode([i]) for i in range(5, 10)]
    assert remote._calls == 3 and remote._local is not None


def test_a_child_that_fails_leaves_the_local_error(converted):
    gguf, folder = converted
    path = folder / "tokenizer.json"
    data = bytearray(path.read_bytes())
    data[:8] = b"not json"  # same size: the folder still looks complete
    path.write_bytes(bytes(data))
    tokenizer = prefetch.start(str(gguf))
    prefetch.take(folder)
    with pytest.raises(Exception) as here:
        prefetch.converted_tokenizer(folder)
    with pytest.raises(type(here.value)):
        tokenizer("the capital")
    assert tokenizer._process is None


def test_no_prefetch_where_it_cannot_help(converted, monkeypatch, tmp_path):
    gguf, folder = converted
    assert prefetch.start(str(tmp_path / "missing.gguf")) is None
    assert prefetch.start("some/hub-id") is None
    monkeypatch.setattr(prefetch, "_started", {})
    for argv in (["lens", "--model", str(gguf), "--help"], ["train", "--steps", "1"],
                 ["lens", "--model", str(gguf), "--backend", "ndif", "--prompt", "x"],
                 ["lens", "--model", str(gguf), "--backend", "nnsight", "--prompt", "x"]):
        cli._prefetch_tokenizer(argv)
        assert prefetch._started == {}, argv
    cli._prefetch_tokenizer(["lens", "--model", str(gguf), "--prompt", "x"])
    assert list(prefetch._started) == [folder.resolve()]
    prefetch.take(folder)._stop()


def test_the_child_ends_with_its_parent(converted):
    gguf, _ = converted
    code = ("import sys; from core.models import prefetch; t = prefetch.start(sys.argv[1]); t._ready(); "
            "print(t._process.pid)")
    run = subprocess.run([sys.executable, "-c", code, str(gguf)], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ}, timeout=120, check=True)
    pid = int(run.stdout)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path("/proc").is_dir() else None
    except OSError:
        return False
    if state is not None:
        return state != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_known_padding_sides_are_the_classes_own():
    import transformers

    for name, side in prefetch.PADDING_SIDES.items():
        assert getattr(transformers, name).padding_side == side, name


def assert_same_json(got, want, where="$"):
    """Equal JSON: the same keys, lengths, strings and ids; floats equal to float32 rounding. MKL's small
    GEMMs round differently with the alignment of their buffers (a 6 x 64 x 512 product differs in its last
    bits between two copies of the same inputs), and a long test process and a fresh one allocate differently."""
    assert type(got) is type(want) or {type(got), type(want)} <= {int, float}, f"{where}: {got!r} != {want!r}"
    if isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for key in want:
            assert_same_json(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_json(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7), where
    else:
        assert got == want, where


def test_the_cli_process_prints_what_the_in_process_cli_prints(converted, capsys):
    """`python -m core lens` (prefetching) and `core.cli.main` (not) give the same JSON."""
    gguf, _ = converted
    argv = ["lens", "--json", "--model", str(gguf), "--prompt", "the capital of France", "--track", "cap", "--top-k", "5"]
    assert cli.main(argv) == 0
    here = json.loads(capsys.readouterr().out)
    run = subprocess.run([sys.executable, "-m", "core", *argv], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ}, timeout=300)
    assert run.returncode == 0, run.stderr
    assert_same_json(json.loads(run.stdout), here)
    assert here["tokens"][0] == "<bos>" and len(here["layers"]) == 3 and len(here["tracked"][0]["layers"]) == 3
