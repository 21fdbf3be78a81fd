"""`python -m core train`: the JSON contract, and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import main
from core.analyses.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[3]
TINY = ["--layers", "1", "--heads", "2", "--d-model", "32", "--context", "32", "--batch-size", "8", "--eval-every", "5"]


def test_train_prints_the_contract_and_saves_a_loadable_checkpoint(tmp_path, layerscope_home):
    env = os.environ | {"LAYERSCOPE_HOME": str(layerscope_home), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "core", "train", "--corpus", "synthetic", "--steps", "6", "--seed", "2", *TINY, "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) == {"steps", "tokens_per_s", "train_loss", "val_loss", "bigram_val_loss", "checkpoint"}
    assert out["steps"] == 6 and len(out["train_loss"]) == 6
    assert out["tokens_per_s"] > 0 and 0 < out["val_loss"] < 5 and 0 < out["bigram_val_loss"] < 5
    assert out["checkpoint"] == str(layerscope_home / "checkpoints" / "synthetic-char-1x32-seed2")
    model, tokenizer, meta = load_checkpoint(out["checkpoint"])
    assert meta["history"]["train_loss_nats"][:6] == pytest.approx(out["train_loss"], abs=1e-5)
    assert model.config.n_layers == 1 and tokenizer.decode(tokenizer("add: 1+1=")["input_ids"]) == "add: 1+1="


def test_same_seed_same_json_in_process(tmp_path, capsys):
    runs = []
    for out_dir in ("a", "b"):
        args = ["train", "--corpus", "synthetic", "--steps", "4", *TINY, "--out", str(tmp_path / out_dir), "--json"]
        assert main(args) == 0
        runs.append(json.loads(capsys.readouterr().out))
    assert runs[0]["train_loss"] == runs[1]["train_loss"] and runs[0]["val_loss"] == runs[1]["val_loss"]


def test_a_text_file_path_is_a_corpus(tmp_path, capsys):
    corpus = tmp_path / "my notes.txt"
    corpus.write_text("the cat sat on the mat. " * 200)
    assert main(["train", "--corpus", str(corpus), "--steps", "2", *TINY, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"].endswith("my_notes-char-1x32-seed0")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--corpus", "no-such-corpus"], "unknown corpus 'no-such-corpus'"),
        (["--steps", "0"], "steps must be a positive integer"),
        (["--d-model", "30", "--heads", "4"], "must be divisible"),
        (["--bpe-vocab", "0", "--tokenizer", "bpe"], "--bpe-vocab"),
        (["--out", "bad name!"], "may only use"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    assert main(["train", "--corpus", "synthetic", "--steps", "1", *TINY, *args, "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err


def test_argparse_errors_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--tokenizer", "wordpiece"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("content, message", [(b"", "is empty"), (b"\xff\xfe\x00bad", "not UTF-8")])
def test_unusable_corpus_files_exit_2(tmp_path, capsys, content, message):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    assert main(["train", "--corpus", str(corpus), "--steps", "1", "--json"]) == 2
    assert message in capsys.readouterr().err
