"""The shipped word list is valid, and bad uploads are refused with every bad row named."""

import unicodedata

import pytest

from core.analyses.translation.wordlist import LANGUAGES, SHIPPED_LANGUAGES, WORDS_CSV, load_words, parse_words, read_words, script_of, scripts_in
from core.errors import UserError


def test_shipped_list_has_150_concepts_in_nine_languages():
    words = load_words()
    assert words.languages == SHIPPED_LANGUAGES == ("en", "hi", "ta", "fr", "de", "es", "zh", "ru", "ja")
    assert len(words) >= 150
    for code in words.languages:
        column = words.words[code]
        assert len(column) == len(words)
        assert all(w and w == w.strip() and " " not in w for w in column), code  # one word per cell
        assert len({w.casefold() for w in column}) == len(column), f"duplicate {code} word"
        assert all(unicodedata.is_normalized("NFC", w) for w in column)
        for w in column:
            assert scripts_in(w) <= LANGUAGES[code].scripts and scripts_in(w), (code, w)
    assert words.row(0) == {"en": "water", "hi": "पानी", "ta": "தண்ணீர்", "fr": "eau", "de": "Wasser",
                            "es": "agua", "zh": "水", "ru": "вода", "ja": "水"}


def test_shipped_file_is_plain_utf8_csv_without_bom():
    raw = WORDS_CSV.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert raw.decode("utf-8").splitlines()[0] == ",".join(SHIPPED_LANGUAGES)


@pytest.mark.parametrize(
    "text, scripts",
    [("फूल", {"Devanagari"}), ("மலர்", {"Tamil"}), ("花", {"Han"}), ("ねこ", {"Hiragana"}), ("ネコ", {"Katakana"}),
     ("玉ねぎ", {"Han", "Hiragana"}), ("fleur", {"Latin"}), ("Fuß", {"Latin"}), ("œuf", {"Latin"}),
     ("цветок", {"Cyrillic"}), ("12 - !", set()), ("꽃", {"Hangul"}), ("ดอกไม้", {"Other"})],
)
def test_scripts_of_words(text, scripts):
    assert scripts_in(text) == scripts


def test_marks_belong_to_their_script_and_symbols_to_none():
    assert script_of("ू") == "Devanagari" and script_of("்") == "Tamil"  # vowel sign, virama
    assert script_of("×") is None and script_of("-") is None and script_of("ー") == "Katakana"


def test_upload_errors_list_every_bad_row():
    text = "\ufefffr,zh,en\nchat,猫,cat\nchien,dog,dog\n,鸟,bird\nchat,马,horse\npoule,ねこ,hen\nbeau\"x,美,nice\na,b\n\n"
    with pytest.raises(UserError) as err:
        parse_words(text, origin="mine.csv")
    message = str(err.value)
    assert message.startswith("mine.csv has 6 bad row(s): ")
    assert "row 3: zh 'dog' is written in Latin, not Han" in message
    assert "row 4: fr '' is empty" in message
    assert "row 5: fr 'chat' repeats row 2" in message
    assert "row 6: zh 'ねこ' is written in Hiragana, not Han" in message
    assert "row 7: fr 'beau\"x' contains a quote" in message
    assert "row 8: 2 cells, expected 3" in message


def test_upload_that_is_fine_is_read_in_order():
    words = parse_words("FR,ja\r\nchat,猫\r\n\r\npoule,鶏\r\n", origin="mine.csv")
    assert words.languages == ("fr", "ja") and len(words) == 2 and words.words["ja"] == ("猫", "鶏")


@pytest.mark.parametrize(
    "text, message",
    [("", "is empty"), ("fr,xx\nchat,chat\n", "unknown column(s) 'xx'"), ("fr\nchat\n", "at least two"),
     ("fr,fr\na,b\n", "appears twice"), ("fr,zh\n", "no words")],
)
def test_bad_headers(text, message):
    with pytest.raises(UserError) as err:
        parse_words(text)
    assert message in str(err.value)


def test_missing_file_and_missing_column(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_words(tmp_path / "nope.csv")
    (tmp_path / "latin1.csv").write_bytes("fr,de\nch\xe8vre,Ziege\n".encode("latin-1"))
    with pytest.raises(UserError, match="UTF-8"):
        read_words(tmp_path / "latin1.csv")
    words = parse_words("fr,zh\nchat,猫\n", origin="pairs.csv")
    with pytest.raises(UserError, match=r"pairs.csv has no column for 'en' \(its columns: fr, zh\)"):
        words.require("fr", "zh", "en")
