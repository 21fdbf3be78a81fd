"""Numeral systems: writing, reading back, normalisation, and telling systems apart."""

import random
import unicodedata

import pytest

from core.analyses.arithmetic.numerals import (
    HI_UNITS,
    MAX_NUMBER,
    SYSTEM_KEYS,
    format_number,
    normalise,
    normalise_devanagari,
    parse_any,
    parse_number,
    token_system,
)


@pytest.mark.parametrize("key", SYSTEM_KEYS)
def test_round_trip_0_to_10000(key):
    for n in range(10001):
        text = format_number(n, key)
        assert parse_number(text, key) == n, (n, text)
        assert parse_any(text) == (n, key), (n, text)


@pytest.mark.parametrize("key", SYSTEM_KEYS)
def test_round_trip_up_to_max_and_distinct_spellings(key):
    numbers = random.Random(1).sample(range(10001, MAX_NUMBER + 1), 3000) + [MAX_NUMBER]
    texts = {}
    for n in numbers + list(range(0, 10001, 7)):
        text = format_number(n, key)
        assert parse_number(text, key) == n, (n, text)
        assert texts.setdefault(normalise(text, key), n) == n, f"{text} written for two numbers"


@pytest.mark.parametrize(
    "n, key, expected",
    [
        (2345, "arabic", "2345"),
        (2345, "devanagari", "२३४५"),
        (2345, "tamil", "௨௩௪௫"),
        (2345, "bengali", "২৩৪৫"),
        (2345, "eastern_arabic", "٢٣٤٥"),
        (0, "tamil", "௦"),
        (115, "english_words", "one hundred fifteen"),
        (2345, "english_words", "two thousand three hundred forty-five"),
        (10000, "english_words", "ten thousand"),
        (999999, "english_words", "nine hundred ninety-nine thousand nine hundred ninety-nine"),
        (0, "hindi_words", "शून्य"),
        (19, "hindi_words", "उन्नीस"),
        (45, "hindi_words", "पैंतालीस"),
        (49, "hindi_words", "उनचास"),
        (79, "hindi_words", "उन्यासी"),
        (99, "hindi_words", "निन्यानवे"),
        (100, "hindi_words", "एक सौ"),
        (1100, "hindi_words", "एक हज़ार एक सौ"),
        (2345, "hindi_words", "दो हज़ार तीन सौ पैंतालीस"),
        (10000, "hindi_words", "दस हज़ार"),
        (250000, "hindi_words", "दो लाख पचास हज़ार"),
    ],
)
def test_known_spellings(n, key, expected):
    assert format_number(n, key) == expected


def test_hindi_units_are_100_distinct_devanagari_words():
    assert len(HI_UNITS) == 100
    assert len({normalise_devanagari(w) for w in HI_UNITS}) == 100
    assert all(all("\u0900" <= c <= "\u097f" for c in w) for w in HI_UNITS)
    # the tens, which learners check first
    assert [HI_UNITS[i] for i in range(10, 100, 10)] == "दस बीस तीस चालीस पचास साठ सत्तर अस्सी नब्बे".split()


@pytest.mark.parametrize(
    "text, key, value",
    [
        (" 12 ", "arabic", 12),
        ("१२.", "devanagari", 12),
        ("One Hundred and Five", "english_words", 105),
        ("forty five", "english_words", 45),
        ("twelve hundred", "english_words", 1200),
        ("पांच", "hindi_words", 5),  # anusvara for chandrabindu
        ("छः", "hindi_words", 6),
        ("निन्यानबे", "hindi_words", 99),
        ("दो हजार", "hindi_words", 2000),  # without the nukta
        ("ग्यारह सौ", "hindi_words", 1100),
        ("सौ", "hindi_words", 100),
        (unicodedata.normalize("NFD", "अड़तीस"), "hindi_words", 38),
    ],
)
def test_variants_normalise_to_the_same_number(text, key, value):
    assert parse_number(text, key) == value


@pytest.mark.parametrize(
    "text, key",
    [
        ("07", "arabic"),
        ("1,234", "arabic"),
        ("२3", "devanagari"),
        ("12", "devanagari"),
        ("", "arabic"),
        ("seven", "arabic"),
        ("one hundred zero", "english_words"),
        ("two two", "english_words"),
        ("thousand", "english_words"),
        ("twenty hundred", "english_words"),
        ("बीस सौ", "hindi_words"),
        ("दो तीन", "hindi_words"),
        ("तीन सौ दो हज़ार", "hindi_words"),
        ("seven", "hindi_words"),
    ],
)
def test_non_numbers_read_as_none(text, key):
    assert parse_number(text, key) is None


def test_format_refuses_numbers_out_of_range():
    for bad in (-1, MAX_NUMBER + 1, 2.0):
        with pytest.raises(ValueError):
            format_number(bad, "arabic")
    with pytest.raises(ValueError, match="choose one of"):
        format_number(3, "roman")


@pytest.mark.parametrize(
    "token, system",
    [
        ("7", "arabic"),
        ("▁7", "arabic"),
        (" ७", "devanagari"),
        ("১২", "bengali"),
        ("௫", "tamil"),
        ("٣", "eastern_arabic"),
        ("seven", "english_words"),
        (" fort", "english_words"),
        ("सात", "hindi_words"),
        ("पै", "hindi_words"),
        ("<0xE0>", "bytes"),
        ("cat", "other"),
        ("7a", "other"),
        ("", "other"),
    ],
)
def test_token_system(token, system):
    assert token_system(token) == system
