"""Numeral systems: write a number in one, read it back, and tell which one a piece of text uses.

Seven systems, keyed as the CLI and its JSON name them: positional decimal digits in Western
Arabic (``arabic``), Devanagari, Tamil, Bengali and Eastern Arabic (``eastern_arabic``), and
number words in English and in Hindi. Numbers run from 0 to ``MAX_NUMBER``.

Reading is exact after normalisation: Unicode NFC, surrounding whitespace and a trailing full
stop dropped; for words also case, hyphens, "and", the nukta and chandrabindu (so हज़ार =
हजार, पाँच = पांच) and the common spelling variants of the Hindi words 1..99. Digits must be
all of the asked system, with no leading zero and no separators. Anything else reads as None.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

MAX_NUMBER = 999_999


@dataclass(frozen=True)
class NumeralSystem:
    key: str  # the name in the CLI and in JSON
    label: str  # what a person reads
    digits: str | None  # ten digit characters 0..9 for positional systems, None for words
    language: str  # "en" or "hi": the language of the system's words or of its usual text

    @property
    def is_words(self) -> bool:
        return self.digits is None


SYSTEMS: dict[str, NumeralSystem] = {
    s.key: s
    for s in (
        NumeralSystem("arabic", "Western Arabic (0-9)", "0123456789", "en"),
        NumeralSystem("devanagari", "Devanagari (०-९)", "०१२३४५६७८९", "hi"),
        NumeralSystem("tamil", "Tamil (௦-௯)", "௦௧௨௩௪௫௬௭௮௯", "ta"),
        NumeralSystem("bengali", "Bengali (০-৯)", "০১২৩৪৫৬৭৮৯", "bn"),
        NumeralSystem("eastern_arabic", "Eastern Arabic (٠-٩)", "٠١٢٣٤٥٦٧٨٩", "ar"),
        NumeralSystem("english_words", "English words", None, "en"),
        NumeralSystem("hindi_words", "Hindi words", None, "hi"),
    )
}
SYSTEM_KEYS = tuple(SYSTEMS)


def system(key: str) -> NumeralSystem:
    """The system named ``key``; ValueError naming the choices otherwise."""
    try:
        return SYSTEMS[key]
    except KeyError:
        raise ValueError(f"unknown numeral system '{key}': choose one of {', '.join(SYSTEM_KEYS)}") from None


# -- English words ------------------------------------------------------------------------------

EN_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
EN_TENS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy", 80: "eighty", 90: "ninety"}
_EN_WORD_VALUE = {w: i for i, w in enumerate(EN_ONES)} | {w: v for v, w in EN_TENS.items()}


def _english(n: int) -> str:
    if n < 20:
        return EN_ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return EN_TENS[tens * 10] + (f"-{EN_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{EN_ONES[hundreds]} hundred" + (f" {_english(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    return f"{_english(thousands)} thousand" + (f" {_english(rest)}" if rest else "")


class _NotANumber(Exception):
    pass


def _parse_english(text: str) -> int | None:
    """[x thousand] [y hundred] [z], x in 1..999, y in 1..9 (or "twelve hundred" on its own), z in 1..99."""
    words = [w for w in re.split(r"[\s\-]+", text.lower().replace(",", " ")) if w and w != "and"]
    pos = 0

    def below_100() -> int | None:
        nonlocal pos
        if pos >= len(words) or words[pos] not in _EN_WORD_VALUE:
            return None
        value = _EN_WORD_VALUE[words[pos]]
        pos += 1
        if value >= 20 and pos < len(words) and 1 <= _EN_WORD_VALUE.get(words[pos], 0) <= 9:
            value += _EN_WORD_VALUE[words[pos]]
            pos += 1
        return value

    def below_1000(colloquial: bool) -> int | None:
        nonlocal pos
        u = below_100()
        if u is None or pos >= len(words) or words[pos] != "hundred":
            return u
        if not (1 <= u <= 9 or (colloquial and 11 <= u <= 99 and u % 10)):
            raise _NotANumber
        pos += 1
        v = below_100()
        if v == 0:
            raise _NotANumber
        return u * 100 + (v or 0)

    if words == ["zero"]:
        return 0
    try:
        value = below_1000(colloquial=True)
        if not value:
            return None
        if pos < len(words) and words[pos] == "thousand":
            if value >= 1000:
                return None
            pos += 1
            rest = below_1000(colloquial=False)
            if rest == 0:
                return None
            value = value * 1000 + (rest or 0)
    except _NotANumber:
        return None
    return value if pos == len(words) else None


# -- Hindi words ----------------------------------------------------------------------------------

# 0..99 in standard Hindi (each is its own word: the tens do not compose regularly).
HI_UNITS = (
    "शून्य एक दो तीन चार पाँच छह सात आठ नौ "  # 0-9
    "दस ग्यारह बारह तेरह चौदह पंद्रह सोलह सत्रह अठारह उन्नीस "  # 10-19
    "बीस इक्कीस बाईस तेईस चौबीस पच्चीस छब्बीस सत्ताईस अट्ठाईस उनतीस "  # 20-29
    "तीस इकतीस बत्तीस तैंतीस चौंतीस पैंतीस छत्तीस सैंतीस अड़तीस उनतालीस "  # 30-39
    "चालीस इकतालीस बयालीस तैंतालीस चवालीस पैंतालीस छियालीस सैंतालीस अड़तालीस उनचास "  # 40-49
    "पचास इक्यावन बावन तिरेपन चौवन पचपन छप्पन सत्तावन अट्ठावन उनसठ "  # 50-59
    "साठ इकसठ बासठ तिरसठ चौंसठ पैंसठ छियासठ सड़सठ अड़सठ उनहत्तर "  # 60-69
    "सत्तर इकहत्तर बहत्तर तिहत्तर चौहत्तर पचहत्तर छिहत्तर सतहत्तर अठहत्तर उन्यासी "  # 70-79
    "अस्सी इक्यासी बयासी तिरासी चौरासी पचासी छियासी सत्तासी अट्ठासी नवासी "  # 80-89
    "नब्बे इक्यानवे बानवे तिरानवे चौरानवे पचानवे छियानवे सत्तानवे अट्ठानवे निन्यानवे"  # 90-99
).split()
HI_HUNDRED, HI_THOUSAND, HI_LAKH = "सौ", "हज़ार", "लाख"
# Spellings seen in print besides the ones above (nukta and chandrabindu are normalised away anyway).
HI_VARIANTS = {
    6: ("छः", "छै", "छे"),
    15: ("पन्द्रह",),
    22: ("बाइस",),
    23: ("तेइस",),
    27: ("सत्ताइस",),
    28: ("अट्ठाइस", "अठ्ठाईस", "अठाईस"),
    29: ("उन्तीस", "उनत्तीस"),
    31: ("इकत्तीस",),
    33: ("तेंतीस", "तैतीस"),
    34: ("चौतीस",),
    35: ("पेंतीस",),
    36: ("छतीस",),
    37: ("सेंतीस",),
    39: ("उन्तालीस",),
    41: ("इक्तालीस",),
    42: ("बियालीस",),
    43: ("तेंतालीस", "तैतालीस"),
    44: ("चौवालीस", "चव्वालीस", "चौआलीस"),
    45: ("पेंतालीस",),
    46: ("छयालीस", "छियालिस"),
    47: ("सेंतालीस",),
    49: ("उंचास", "उनन्चास"),
    51: ("इकावन",),
    53: ("तिरपन", "त्रेपन"),
    54: ("चौअन", "चव्वन"),
    57: ("सतावन",),
    58: ("अठावन", "अठ्ठावन"),
    63: ("तिरेसठ", "त्रेसठ"),
    64: ("चौसठ",),
    65: ("पेंसठ",),
    66: ("छयासठ",),
    67: ("सरसठ",),
    76: ("छियत्तर",),
    77: ("सत्तहत्तर",),
    78: ("अठत्तर", "अट्ठहत्तर"),
    79: ("उनासी", "उन्नासी"),
    87: ("सतासी",),
    88: ("अठासी",),
    89: ("नव्वासी",),
    91: ("इक्यानबे",),
    92: ("बानबे",),
    93: ("तिरानबे",),
    94: ("चौरानबे",),
    95: ("पचानबे", "पंचानवे", "पंचानबे"),
    96: ("छियानबे",),
    97: ("सत्तानबे", "सतानवे", "सतानबे"),
    98: ("अट्ठानबे", "अठानवे", "अठानबे"),
    99: ("निन्यानबे", "निन्नानवे", "निन्नानबे"),
}


def normalise_devanagari(text: str) -> str:
    """NFC without nukta (ज़ -> ज) and with chandrabindu as anusvara (ँ -> ं)."""
    text = unicodedata.normalize("NFD", text).replace("\u093c", "").replace("\u0901", "\u0902")
    return unicodedata.normalize("NFC", text)


@lru_cache(maxsize=1)
def _hindi_word_values() -> dict[str, int]:
    """Normalised Hindi word -> value, for units 0..99 (canonical and variant spellings) and the scales."""
    table: dict[str, int] = {}
    for value, word in enumerate(HI_UNITS):
        table[normalise_devanagari(word)] = value
    for value, words in HI_VARIANTS.items():
        for word in words:
            key = normalise_devanagari(word)
            if table.setdefault(key, value) != value:
                raise AssertionError(f"Hindi spelling {word} names two numbers")
    return table


_HI_SCALES = {normalise_devanagari(HI_HUNDRED): 100, normalise_devanagari(HI_THOUSAND): 1000, normalise_devanagari(HI_LAKH): 100_000}


def _hindi(n: int) -> str:
    if n < 100:
        return HI_UNITS[n]
    parts = []
    for scale, word in ((100_000, HI_LAKH), (1000, HI_THOUSAND)):
        count, n = divmod(n, scale)
        if count:
            parts += [HI_UNITS[count], word]
    hundreds, n = divmod(n, 100)
    if hundreds:
        parts += [HI_UNITS[hundreds], HI_HUNDRED]
    if n:
        parts.append(HI_UNITS[n])
    return " ".join(parts)


def _parse_hindi(text: str) -> int | None:
    """[x लाख] [y हज़ार] [z सौ] [w], x, y, w in 1..99, z in 1..9 (or 10..99 alone: ग्यारह सौ = 1100)."""
    units = _hindi_word_values()
    words = normalise_devanagari(text).replace(",", " ").split()
    if not words:
        return None
    if len(words) == 1 and units.get(words[0]) == 0:
        return 0
    value, pos, largest = 0, 0, None
    while pos < len(words):
        word = words[pos]
        count = units.get(word)
        if count == 0:
            return None
        if count is not None and pos + 1 < len(words) and words[pos + 1] in _HI_SCALES:
            scale = _HI_SCALES[words[pos + 1]]
            pos += 2
        elif word in _HI_SCALES and _HI_SCALES[word] == 100:  # bare "सौ" = one hundred
            count, scale = 1, 100
            pos += 1
        elif count is not None and pos == len(words) - 1:
            scale = 1
            pos += 1
        else:
            return None
        if largest is not None and scale >= largest:
            return None
        if scale == 100 and count > 9 and (largest is not None or count % 10 == 0):
            return None  # "ग्यारह सौ" only on its own, and never "बीस सौ"
        largest = scale
        value += count * scale
    return value


# -- every system -------------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")


def format_number(n: int, key: str) -> str:
    """``n`` written in system ``key`` (digits without separators; words in their canonical spelling)."""
    s = system(key)
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"numbers are written from 0 to {MAX_NUMBER}, got {n!r}")
    if s.digits is not None:
        return "".join(s.digits[int(c)] for c in str(n))
    return _english(n) if key == "english_words" else _hindi(n)


def normalise(text: str, key: str) -> str:
    """Text as it is compared: NFC, trimmed, one space between words, no trailing full stop or danda;
    words also lower-cased with hyphens as spaces (and Hindi without nukta/chandrabindu)."""
    text = unicodedata.normalize("NFC", text).replace("\u200b", "").replace("\u200c", "").replace("\u200d", "")
    text = _SPACE.sub(" ", text).strip().rstrip(".।").strip()
    s = system(key)
    if s.is_words:
        text = text.lower().replace("-", " ")
        if key == "hindi_words":
            text = normalise_devanagari(text)
        text = _SPACE.sub(" ", text).strip()
    return text


def parse_number(text: str, key: str) -> int | None:
    """The number ``text`` writes in system ``key``, or None when it is not one (exact after ``normalise``)."""
    s = system(key)
    text = normalise(text, key)
    if not text:
        return None
    if s.digits is not None:
        if any(c not in s.digits for c in text) or (len(text) > 1 and text[0] == s.digits[0]):
            return None
        value = int("".join(str(s.digits.index(c)) for c in text))
    else:
        value = _parse_english(text) if key == "english_words" else _parse_hindi(text)
    return value if value is not None and value <= MAX_NUMBER else None


def parse_any(text: str) -> tuple[int, str] | None:
    """(value, system key) of the first system that reads ``text``, or None."""
    for key in SYSTEM_KEYS:
        value = parse_number(text, key)
        if value is not None:
            return value, key
    return None


# -- which system a token belongs to ---------------------------------------------------------

_DIGIT_SYSTEM = {c: key for key, s in SYSTEMS.items() if s.digits for c in s.digits}
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
_EN_VOCAB = tuple(EN_ONES) + tuple(EN_TENS.values()) + ("hundred", "thousand")


@lru_cache(maxsize=1)
def _hi_vocab() -> tuple[str, ...]:
    return tuple(_hindi_word_values()) + tuple(_HI_SCALES)


def token_system(text: str) -> str:
    """What a token's text is: a system key when it is digits of one system or (the start of) a number
    word, "bytes" for a byte-fallback token, "other" otherwise."""
    if _BYTE_PIECE.match(text.strip()):
        return "bytes"
    core = text.replace("▁", " ").replace("Ġ", " ").strip()
    if not core:
        return "other"
    digit_systems = {_DIGIT_SYSTEM.get(c) for c in core}
    if len(digit_systems) == 1 and None not in digit_systems:
        return digit_systems.pop()
    lower = core.lower()
    if lower.isascii() and lower.isalpha() and (lower in _EN_VOCAB or (len(lower) >= 3 and any(w.startswith(lower) for w in _EN_VOCAB))):
        return "english_words"
    hindi = normalise_devanagari(core)
    if all("\u0900" <= c <= "\u097f" for c in hindi) and (
        hindi in _hi_vocab() or (len(hindi) >= 2 and any(w.startswith(hindi) for w in _hi_vocab()))
    ):
        return "hindi_words"
    return "other"
