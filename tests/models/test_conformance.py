"""The conformance suite: every operation of the door on a tiny random model of every supported architecture case
(``tests.models.conformance``), and the table ``python -m core architectures`` prints from its outcomes.

Each (case, check) passes where ``core/models/verified.json`` records it passing, and fails where the file records a
failure (an expected failure, with the recorded reason; one that passes now fails the suite until the table is
regenerated: ``python -m tests.models.conformance_table --write``). So the table never claims more, or less, than
the suite shows.
"""

import json
import subprocess
import sys

import pytest
import torch

from core.errors import UserError
from core.models.adapters import ARCHITECTURES
from tests.models import conformance
from tests.models.conformance import CASES, CHECKS
from tests.models.conformance_table import COMMAND, PATH, table

RECORD = json.loads(PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and far faster than on two when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case,name", [(case, name) for case in CASES for name in CHECKS])
def test_conformance(case, name):
    recorded = RECORD["cases"].get(case, {}).get(name)
    if recorded is None:  # a new case or check: show how it fares, then ask for the table
        conformance.run(case, name)
        pytest.fail(f"{case} {name} passes but is not in {PATH.name}: regenerate it with `{COMMAND}`")
    if not recorded.startswith("failed"):
        refusal = conformance.run(case, name)
        assert recorded == (f"refused: {refusal}"[:300] if refusal else "passed"), f"regenerate with `{COMMAND}`"
        return
    try:
        conformance.run(case, name)
    except Exception:  # noqa: BLE001 (as recorded)
        pytest.xfail(recorded)
    pytest.fail(f"{case} {name} passes now, but {PATH.name} records '{recorded}': regenerate it with `{COMMAND}`")


def test_the_table_lists_exactly_the_suites_cases_and_checks():
    assert list(RECORD["cases"]) == list(CASES)
    assert all(list(checks) == list(CHECKS) for checks in RECORD["cases"].values())
    assert RECORD["checks"] == {name: list(check.operations) for name, check in CHECKS.items()}
    assert len(RECORD["architectures"]) >= 20
    rebuilt = table(RECORD["cases"])
    for key in ("operations", "architectures"):
        assert rebuilt[key] == RECORD[key], f"{key} does not follow from the outcomes: regenerate with `{COMMAND}`"
    assert {row["model_type"] for row in RECORD["architectures"]} == set(ARCHITECTURES)


def test_the_command_prints_the_table_without_torch():
    code = ("import sys; from core.cli import main; main(['architectures', '--json']); "
            "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    printed, imported = child.stdout.strip().rsplit("\n", 1)
    assert imported == "[]"
    rows = json.loads(printed)["architectures"]
    assert [row["model_type"] for row in rows] == [row["model_type"] for row in RECORD["architectures"]]
    for row, recorded in zip(rows, RECORD["architectures"]):
        assert {"model_type", "family", "verified", "operations"} <= set(row)
        assert row["family"] == ARCHITECTURES[row["model_type"]].family
        assert row["verified"] == recorded["verified"] and row["operations"] == recorded["operations"]
    assert sum(row["verified"] for row in rows) >= 20


def test_markdown_names_every_model_type_once(capsys):
    from core.cli import main

    with pytest.raises(SystemExit) as done:
        main(["architectures", "--markdown"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("| family | model types |") and "{" not in text
    for model_type in ARCHITECTURES:
        assert text.count(f"`{model_type}`") == 1, model_type


def test_an_unsupported_model_gets_one_line_naming_what_its_adapter_lacks():
    from transformers import AutoModelForCausalLM, GPTJConfig

    from core.models import wrap_model
    from tests import tiny

    tok = tiny.tokenizer("llama")
    model = AutoModelForCausalLM.from_config(GPTJConfig(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=4,
                                                        rotary_dim=4, n_positions=64))
    with pytest.raises(UserError) as error:
        wrap_model(model, tok, "tiny-gptj")
    message = str(error.value)
    assert "\n" not in message
    # Every part is where some entry looks for it (GPT-2's paths, GPT-J's out_proj like tinylm's): what an entry
    # must still say is how the block forms the residual stream (GPT-J's is parallel).
    assert message.startswith("architecture 'gptj' (GPTJForCausalLM) is not supported: no adapter says how its "
                              "residual stream is formed")
    assert "its decoder layer's forward decides the rest (add an entry to ADAPTERS in core/models/adapters.py" in message
