"""Script text normalisation shared by alignment, subtitles and the transcript check.

A script is split into *display tokens* (whitespace-separated pieces as the author wrote them,
punctuation included, e.g. ``"2024,"``). Each display token expands to zero or more *spoken
words*: lower-case, punctuation-free words a recogniser can match (``"2024,"`` ->
``["two", "thousand", "twenty", "four"]``). Alignment times spoken words; subtitles show display
tokens with the times of their spoken words; the word error rate compares spoken words.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_ORDINAL_SUFFIX = re.compile(r"^(\d+)(st|nd|rd|th)$")
_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
             "nine": "ninth", "twelve": "twelfth"}
_SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "@": " at ", "=": " equals "}
_CURRENCY = {"$": "dollars", "€": "euros", "£": "pounds"}


#: How numbers are read: ``spoken`` (years in pairs: "nineteen eighty four"), ``cardinal``
#: ("one thousand nine hundred eighty four") and ``british`` (with "and", as espeak-ng reads them:
#: "nineteen hundred and eighty four", "two thousand and twenty four").
NUMBER_STYLES = ("spoken", "cardinal", "british")


def number_to_words(n: int, *, british: bool = False) -> list[str]:
    """English cardinal words for ``0 <= n < 10**12`` (``1905`` -> one thousand nine hundred five;
    with ``british`` -> one thousand nine hundred and five)."""
    if n < 0:
        return ["minus", *number_to_words(-n, british=british)]
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        tens, ones = divmod(n, 10)
        return [_TENS[tens]] + ([_ONES[ones]] if ones else [])
    for scale, name in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            tail = number_to_words(rest, british=british) if rest else []
            if british and 0 < rest < 100:
                tail = ["and"] + tail
            return number_to_words(head, british=british) + [name] + tail
    raise AssertionError("unreachable")


def _year_words(n: int, style: str) -> list[str]:
    """Four-digit years: pairs ("nineteen eighty four", "twenty ten") or, british, hundreds."""
    hi, lo = divmod(n, 100)
    if style == "british":
        return number_to_words(hi) + ["hundred"] + (["and"] + number_to_words(lo) if lo else [])
    if lo == 0:
        return number_to_words(hi) + ["hundred"]
    return number_to_words(hi) + (["oh"] if lo < 10 else []) + number_to_words(lo)


def _digits_to_words(digits: str, as_year: bool, style: str = "spoken") -> list[str]:
    if len(digits) > 12:  # phone numbers, codes: read digit by digit
        return [_ONES[int(c)] for c in digits]
    n = int(digits)
    if as_year and style == "spoken" and (1100 <= n <= 1999 or 2010 <= n <= 2099):
        return _year_words(n, style)
    if as_year and style == "british" and 1100 <= n <= 1999 and n % 100:
        return _year_words(n, style)
    return number_to_words(n, british=style == "british")


def _ordinal(words: list[str]) -> list[str]:
    last = words[-1]
    if last in _ORDINALS:
        last = _ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last = last + "th"
    return words[:-1] + [last]


def spoken_words(token: str, style: str = "spoken") -> list[str]:
    """Spoken words of one display token (numbers spelled out in ``style``, punctuation dropped)."""
    text = unicodedata.normalize("NFKC", token).lower().replace("’", "'").replace("‘", "'")
    text = re.sub(r"([$€£])(\d[\d.,]*)", lambda m: f"{m.group(2)} {_CURRENCY[m.group(1)]}", text)
    for sym, repl in {**_SYMBOLS, **{k: f" {v} " for k, v in _CURRENCY.items()}}.items():
        text = text.replace(sym, repl)
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 -> 1000
    text = re.sub(r"[-_/–—]", " ", text)
    out: list[str] = []
    for piece in text.split():
        m = _ORDINAL_SUFFIX.match(piece.strip(".,;:!?\"'()[]"))
        if m:
            out += _ordinal(_digits_to_words(m.group(1), False, style))
            continue
        for part in re.findall(r"\d+\.\d+|\d+|[^\W\d_]+(?:'[^\W\d_]+)*", piece):
            if "." in part:
                whole, frac = part.split(".")
                out += _digits_to_words(whole, False, style) + ["point"] + [_ONES[int(c)] for c in frac]
            elif part.isdigit():
                out += _digits_to_words(part, len(part) == 4, style)
            else:
                out.append(part)
    return out


@dataclass
class Token:
    """One display token of the script and the spoken words it stands for."""

    display: str
    words: list[str] = field(default_factory=list)


def tokenize_script(script: str, style: str = "spoken") -> list[Token]:
    """Split a script into display tokens; tokens with no spoken word (a lone dash) are kept so
    the subtitles still show them, attached to their neighbours' times."""
    if style not in NUMBER_STYLES:
        raise ValueError(f"number style {style!r}; expected one of {NUMBER_STYLES}")
    return [Token(t, spoken_words(t, style)) for t in script.split()]


def script_variants(script: str) -> list[list[Token]]:
    """The script's distinct tokenisations over :data:`NUMBER_STYLES` (one when it has no number)."""
    out: list[list[Token]] = []
    for style in NUMBER_STYLES:
        tokens = tokenize_script(script, style)
        if all([w for t in tokens for w in t.words] != [w for t in o for w in t.words] for o in out):
            out.append(tokens)
    return out


def speakable_text(script: str) -> str:
    """The script with numbers and symbols written out (spoken style), punctuation kept, so a TTS
    engine says exactly the words the aligner expects."""
    out = []
    for tok in tokenize_script(script):
        if re.search(r"[\d$€£%&+@=]", tok.display):
            trail = re.search(r"[.,;:!?]*$", tok.display).group(0)
            out.append(" ".join(tok.words) + trail)
        else:
            out.append(tok.display)
    return " ".join(out)


def normalise_words(text: str, style: str = "spoken") -> list[str]:
    """Flat list of spoken words of a text (for WER)."""
    return [w for t in tokenize_script(text, style) for w in t.words]


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    """Levenshtein word error rate ``(S + D + I) / N`` of ``hypothesis`` against ``reference``.

    ``N = len(reference)``; an empty reference gives 0.0 for an empty hypothesis, else 1.0.
    The rate can exceed 1.0 when the hypothesis has many insertions.
    """
    if not reference:
        return 0.0 if not hypothesis else 1.0
    prev = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        cur = [i] + [0] * len(hypothesis)
        for j, hyp in enumerate(hypothesis, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ref != hyp))
        prev = cur
    return prev[-1] / len(reference)


#: Recognisers whose ``script_wer`` is trusted without an explicit opt-in.
TRUSTED_RECOGNISERS = ("whisperx",)


def wer_trusted(backend: str | None, pocketsphinx_wer_in_flag: bool = False) -> bool:
    """Whether a row's ``script_wer`` means something: QC judges it and the report shows it.

    Trusted: whisperx (a neural recogniser, faster-whisper, reads human and synthetic voices).
    pocketsphinx's free recognition is trusted only when the user says so with
    ``align.pocketsphinx_wer_in_flag`` (clean read human speech, where it scores WER 0.1-0.6 on
    matching pairs): on espeak-ng speech it scores about 1.0 even when the audio says the script,
    so by default its figure is kept in the results but neither judged nor shown.
    The rule and its measurements are written down in ``docs/qc.md`` (Transcript check)."""
    return backend in TRUSTED_RECOGNISERS or (backend == "pocketsphinx"
                                             and bool(pocketsphinx_wer_in_flag))
