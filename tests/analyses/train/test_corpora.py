"""Shipped corpora, the synthetic generator and its skill probes, and corpus validation."""

import re
from pathlib import Path

import pytest

from core.errors import UserError
from core.analyses.train.corpora import CORPORA_DIR, corpus_names, decode_text, load_corpus
from core.analyses.train.skills import corpus_has_skills, solved
from core.analyses.train.synthetic import BRACKET_PAIRS, skill_probes, synthetic_text


def test_shipped_synthetic_file_is_what_the_generator_writes():
    assert (CORPORA_DIR / "synthetic.txt").read_text(encoding="utf-8") == synthetic_text()


def test_every_synthetic_line_is_correct():
    for line in synthetic_text(lines=2000).splitlines():
        kind, _, body = line.partition(": ")
        if kind == "count":
            numbers = [int(n) for n in body.split()]
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) and len(numbers) >= 4
        elif kind == "add":
            a, b, total = map(int, re.fullmatch(r"(\d+)\+(\d+)=(\d+)", body).groups())
            assert a + b == total
        else:
            assert kind == "brackets"
            openers, closers = body.split(" | ")
            assert [BRACKET_PAIRS[o] for o in reversed(openers.split())] == closers.split()


def test_probes_are_fixed_and_answer_correctly():
    probes = skill_probes()
    assert probes == skill_probes()  # the same prompts every run
    assert {skill: len(items) for skill, items in probes.items()} == {"counting": 32, "addition": 32, "brackets": 32}
    count = probes["counting"][0]
    assert int(count.answer) == int(count.prompt.split()[-1]) + 1 and count.answer.startswith(" ")
    add = probes["addition"][0]
    assert eval(add.prompt.removeprefix("add: ").rstrip("=")) == int(add.answer)  # noqa: S307 (digits and +)


def test_solved_needs_the_whole_answer_and_a_boundary():
    assert solved(" 15 16", " 15") and solved(" 15\ncount", " 15")
    assert not solved(" 150", " 15") and not solved(" 1", " 15") and not solved(" 14 ", " 15")


def test_skill_tracking_follows_the_corpus():
    assert corpus_has_skills(load_corpus("synthetic").text)
    assert not corpus_has_skills(load_corpus("shakespeare").text)


def test_shakespeare_is_a_few_hundred_kilobytes_of_plays():
    text = load_corpus("shakespeare").text
    assert 300_000 < len(text) < 500_000
    assert text.startswith("MACBETH") and "To be, or not to be" in text and "THE TEMPEST" in text.upper()
    assert "gutenberg" not in text.lower()  # licence boilerplate removed
    assert set(corpus_names()) == {"shakespeare", "synthetic"}


@pytest.mark.parametrize(
    "raw, message",
    [(b"", "empty"), (b"   \n\n ", "empty"), (b"\xff\xfeabc" * 100, "not UTF-8"), (b"short text", "only 10 characters")],
    ids=["empty", "blank", "not-utf8", "too-short"],
)
def test_unusable_text_is_a_user_error(raw, message):
    with pytest.raises(UserError, match=message):
        decode_text("upload.txt", raw)


def test_unknown_name_and_unreadable_file_are_user_errors():
    with pytest.raises(UserError, match="unknown corpus 'tolstoy'.*shakespeare"):
        load_corpus("tolstoy")
    if not Path("/proc/self/mem").is_file():
        pytest.skip("needs Linux's /proc")
    # a regular file that even root cannot read from the start (EIO): stands in for any unreadable upload
    with pytest.raises(UserError, match="cannot read corpus file"):
        load_corpus("/proc/self/mem")
