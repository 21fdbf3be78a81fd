"""Facts: the shipped list, uploads and their bad forms (one line, exit 2), few-shot prompts, first-token notes."""

import pytest

from core.analyses.lookup import Settings, facts, run
from core.cli import main
from core.errors import UserError


def test_the_shipped_list():
    shipped = facts.shipped()
    assert len(shipped) >= 150
    assert len({f.relation for f in shipped}) >= 8 and {f.language for f in shipped} >= {"en", "fr", "de", "es"}
    assert all(f.subject and f.subject in f.prompt and f.answer for f in shipped)
    assert len({f.prompt for f in shipped}) == len(shipped)


def test_upload_with_only_prompt_and_answer():
    got = facts.parse("prompt,answer\nThe capital of France is,Paris\n\n  ,  \nWater is made of,hydrogen\n".encode())
    assert got == [facts.Fact("The capital of France is", "Paris"), facts.Fact("Water is made of", "hydrogen")]
    bom = facts.parse("\ufeffPrompt , Answer,subject\nThe capital of France is,Paris,France\n".encode())
    assert bom[0].subject == "France"


BAD = [
    (b"", "is empty"),
    (b"   \n\n", "is empty"),
    (b"PK\x03\x04\x00\x00binary", "binary file"),
    ("prompt,answer\nLa capitale,Paris\n".encode("utf-16"), "binary file"),
    (b"prompt,answer\nThe capital of France is,Par\xe9s\n", "not UTF-8"),
    (b"question,reply\nThe capital of France is,Paris\n", "lacks the column(s) prompt, answer"),
    (b"prompt\nThe capital of France is\n", "lacks the column(s) answer"),
    (b"prompt,answer\nThe capital of France is,\nThe capital of Spain is,Madrid\n,Rome\n", "row 2 has an empty answer"),
    (b"prompt,answer\n,Rome\n", "row 2 has an empty prompt"),
    (b"prompt,answer,subject\nThe capital of France is,Paris,Spain\n", "subject that does not appear"),
    (b"prompt,answer\n", "no facts"),
]


@pytest.mark.parametrize("data, message", BAD, ids=[m for _, m in BAD])
def test_bad_upload_is_a_user_error(data, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings(task="facts", facts_csv=data).validate()


@pytest.mark.parametrize("data, message", BAD[:1] + BAD[2:3] + BAD[5:6] + BAD[7:8], ids=["empty", "binary", "columns", "answers"])
def test_bad_upload_on_the_cli_is_one_line_and_exit_2(tmp_path, capsys, data, message):
    path = tmp_path / "facts.csv"
    path.write_bytes(data)
    assert main(["lookup", "--task", "facts", "--facts", str(path), "--json"]) == 2  # before any model loads
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("error: the uploaded facts file")


@pytest.mark.parametrize("args, message", [
    (["--pairs", "0"], "--pairs must be at least 1"),
    (["--pairs", "5000"], "K (pairs per prompt) must be 1..2000"),
    (["--n", "0"], "prompts per K must be 1..1000"),
    (["--task", "facts", "--facts", "/no/such.csv"], "cannot read the facts file"),
    (["--task", "facts", "--shots", "40"], "shots must be 0..16"),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys, args, message):
    assert main(["lookup", *args, "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_shots_come_from_the_same_relation_and_language():
    shipped = facts.shipped()
    texts = facts.with_shots(shipped, 2, seed=0)
    assert texts == facts.with_shots(shipped, 2, seed=0)
    for fact, text in zip(shipped, texts):
        lines = text.split("\n")
        assert len(lines) == 3 and lines[-1] == fact.prompt
        shown = {f.prompt: f for f in shipped}
        for line in lines[:2]:
            other = next(f for p, f in shown.items() if line.startswith(p + " "))
            assert (other.relation, other.language) == (fact.relation, fact.language) and line == f"{other.prompt} {other.answer}"


def test_an_answer_of_several_tokens_is_scored_by_its_first_and_the_result_says_so(gemma):
    data = "prompt,answer,subject\nThe capital of Argentina is the city of,Buenos Aires,Argentina\n" \
           "The capital of France is the city of,Paris,France\n".encode()
    result = run(gemma, Settings(task="facts", facts_csv=data, top_heads=0, kinds=(), neurons=0))
    assert any("1 of 2 answers are several tokens" in note and "' Buenos'" in note for note in result.notes)
    assert list(result.prompts["answer"]) == [" Buenos", " Paris"]
    assert result.to_json()["notes"] == result.notes
