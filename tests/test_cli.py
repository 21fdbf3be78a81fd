"""`python -m core lens`: the JSON contract and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_lens_json_contract(gemma, capsys):
    code = main(["lens", "--model", "gemma-3-270m", "--prompt", "The capital of France is", "--top-k", "4", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(out) == {"model", "n_layers", "tokens", "position", "layers", "lens"} and out["lens"] == "logit"
    assert out["model"] == "gemma-3-270m" and out["n_layers"] == 18
    assert out["tokens"] == ["<bos>", "The", " capital", " of", " France", " is"] and out["position"] == 5
    assert [layer["layer"] for layer in out["layers"]] == list(range(19))
    for layer in out["layers"]:
        assert set(layer) == {"layer", "top", "entropy_bits", "kl_to_final_bits"}
        assert len(layer["top"]) == 4 and set(layer["top"][0]) == {"token", "id", "prob"}
        probs = [t["prob"] for t in layer["top"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5
        assert layer["entropy_bits"] >= 0 and layer["kl_to_final_bits"] >= 0
    assert out["layers"][-1]["kl_to_final_bits"] == 0.0  # the lens at the last layer is the model, exactly
    assert out["layers"][0]["top"][0]["token"] == " is"  # the tied embedding decodes to the input token


def test_lens_position_from_the_start(gemma, capsys):
    assert main(["lens", "--prompt", "The capital of France is", "--position", "1", "--top-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["position"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "   "], "prompt is empty"),
        (["--prompt", "hi", "--model", "./no/such/model"], "not found"),
        (["--prompt", "hi", "--position", "7"], "outside the prompt"),
        (["--prompt", "hi", "--top-k", "0"], "top-k"),
        (["--prompt", "hi " * 33000], "longer than the model's context"),
        (["--prompt", "hi", "--dtype", "float8"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(gemma, capsys, args, message):
    with pytest.raises(SystemExit) if "--dtype" in args else _no_raise():
        code = main(["lens", *args, "--json"])
        assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_cuda_without_gpu_exit_2():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    run = subprocess.run(
        [sys.executable, "-m", "core", "lens", "--prompt", "hi", "--device", "cuda", "--json"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120,
    )
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip() == "error: device 'cuda' was asked for but no CUDA GPU is visible here: use --device cpu or auto"


def test_leaving_without_teardown_keeps_output_handlers_and_code(tmp_path):
    """`python -m core` ends with os._exit: buffered output (more than a pipe holds) still arrives, the exit
    handlers still run (in registration's reverse order), and the exit code is the command's."""
    code = ("import atexit, sys; from core.cli import exit_without_teardown; "
            "atexit.register(print, 'first registered'); atexit.register(print, 'second registered'); "
            "sys.stdout.write('x' * 300000 + chr(10)); print('to stderr', file=sys.stderr); exit_without_teardown(3)")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 3
    assert run.stdout == "x" * 300000 + "\nsecond registered\nfirst registered\n"
    assert run.stderr == "to stderr\n"


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
