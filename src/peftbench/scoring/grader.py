"""Answer extraction and grading for chain-of-thought math outputs (GSM8K, MetaMathQA, MATH-style).

Pure Python: no torch, and importing this module loads nothing heavy. Math-Verify (and with it
sympy) is imported only in a worker process, and only when two answers cannot be compared as
plain numbers.

How an answer is found (`extract_answer`), in this order:

1. Cut the hallucinated continuation. Models trained with "Question: ... Answer:" prompts keep
   writing a new "Question: ..." (or "Q:", "Problem:", "### Instruction", a chat special token
   such as "<|eot_id|>") after answering; only the text before it counts. GSM8K calculator
   annotations "<<48/2=24>>" are removed (they repeat the number that follows them).
2. Markers: "The answer is: ", "The answer is ", "The final answer is", "#### N" and
   `\\boxed{...}`. A capitalised phrase counts wherever it stands, also after a word without a
   period ("5+20+5=30 minutes The answer is 30.": chain-of-thought lines often lack it, and the
   reference's parser accepts them). A lower-case phrase counts only where a sentence or a
   concluding clause starts ("So the answer is 72", "..., so the answer is 72", "... 3 bolts so
   the answer is 3"), not inside one ("We are given that the answer is 2, so ..."); "####" only
   before something that can start an answer (a markdown heading "#### Step 2" is no marker).
   A blank line after the first marker's answer starts a new paragraph that is not part of this
   answer (a continuation without a "Question:" header), so the text is cut there too.
3. Of the markers left, the one that ends the reasoning wins: the LAST occurrence, whatever its
   kind ("#### 15\\nThe answer is: 16" gives 16; "The final answer is $\\boxed{7}$" the box).
   Two exceptions, both about text that is not an answer: a marker whose answer starts with a
   word ("... I checked: the answer is correct") is passed over for an earlier one that starts
   like a number or a formula (when every marker starts with a word the last still wins: MATH
   answers can be words, "\\text{Monday}"); and a last answer that ends the text and is a strict
   prefix of the one before ("The answer is: 72\\nThe answer is: 7") is a repeat cut by the token
   limit, so the one before wins.
4. The answer text (up to the end of its line, or the box's closing brace) is normalised:
   thousands separators, currency, LaTeX wrappers, leading "about"/"approximately"/"therefore", trailing
   units or words and punctuation go; "x = 5" and "48/2 = 24" give what follows the last "=";
   "1.5 million" and "five" are numbers; a number comes back in a canonical form ("1,080" ->
   "1080", "$29.00" -> "29.00", "\\frac{3}{4}" -> "3/4", "25%" -> "25"); anything else (an
   interval, a surd, "2x") comes back as cleaned LaTeX.

mode="strict" returns None when no marker (with an answer) is present. mode="flexible" returns
the strict answer when there is one, else the last number of the cut text (lm-eval-harness'
"flexible-extract"). So a flexible grade is never below the strict grade of the same output.

How answers compare (`is_correct`):

* numbers by exact value (fractions.Fraction, so "29.00" == 29, "3/4" == 0.75, "1,080" == 1080),
  with an absolute tolerance of 1e-6 for rounded repeating decimals ("33.333333" vs 100/3);
* percentages: "25%" and "25 percent" are the number 25. The sign is a unit like "dollars".
  GSM8K writes every percentage answer in percent ("What percentage ...? #### 25"), and so does
  MetaMathQA, so a model that answers "0.25" to such a question is counted wrong. Accepting both
  readings would also make "25%" right for a gold of 0.25 (a ratio question), which is a different
  answer. One reading, the literal one, is predictable and symmetric;
* a numeric reference against a prediction that is not a plain number (e.g. "2^{3}") goes to the
  symbolic check unless the prediction is prose (three letters in a row outside LaTeX commands),
  which cannot equal a number;
* a non-numeric reference (MATH rows: "\\frac{\\sqrt{2}}{2}", intervals, tuples) goes through
  Math-Verify's `parse` + `verify`.

Time bound of the symbolic check: sympy can run for minutes on a short input ("9^{9^{9}}") and a
thread cannot be stopped, while Math-Verify's own bound uses signal.alarm, which raises off the
main thread. So Math-Verify runs with its timeouts off (parsing_timeout=None,
timeout_seconds=None) inside a separate worker process, and the caller waits at most
SYMBOLIC_TIMEOUT_S per item; past that the worker is killed (a fresh one starts on the next
symbolic item) and the item is graded wrong. Inputs longer than MAX_SYMBOLIC_CHARS are graded
wrong without a symbolic check: real final answers are short, and the limit keeps memory and
time small even before the clock runs out. Results are cached per (reference, prediction) pair.

GRADER_VERSION is recorded in every result. Bump it whenever a change here can change an
extracted answer or a correct flag for some input (a new marker, a normalisation rule, a
comparison rule, the time or size bound); refactors and comments do not bump it. `peftbench
rescore` recomputes old results with the current grader and records the version it used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable

from peftbench.scoring.symbolic import MAX_SYMBOLIC_CHARS, SYMBOLIC_STARTUP_TIMEOUT_S, SYMBOLIC_TIMEOUT_S, SymbolicChecker, symbolic_equal  # noqa: F401  (re-exported: the grader's public surface)

GRADER_VERSION = "2"
# sha256 of the grades of every case in tests/scoring/scoring_cases.py, per grader version
# (tests/scoring/test_grader.py computes it): a change here that alters a grade fails that test
# until GRADER_VERSION is bumped. Version 2: a capitalised "The answer is" after a word without a
# period, "so the answer is" after any word, "The answer is therefore 3".
GRADES_SHA256 = {
    "2": "b8f6afe383019875fbf7ab9e6cb29dc57d66422ff2a8a160e3b714d7cccd92dc",
}

MODES = ("strict", "flexible")

NUMERIC_TOLERANCE = Fraction(1, 10**6)


# --------------------------------------------------------------------------------------------
# Step 1: cut what the model wrote after its answer


# A new prompt block at the start of a line (not at the very start of the output): the model
# goes on with a made-up next question or a chat turn.
_CONTINUATION_LINE_RE = re.compile(
    r"\n[ \t]*(?:#+[ \t]*)?(?:\*\*)?"
    r"(?:question|q|problem|query|human|user|instruction)\b[ \t]*\d*[ \t]*(?:\*\*)?[ \t]*:",
    re.IGNORECASE,
)
# The same within a line ("... The answer is: 72 Question: Tom has ..."), only capitalised and
# with its colon, which reasoning text does not write.
_CONTINUATION_INLINE_RE = re.compile(r"(?<=\s)Question\s*:")
# Special tokens left in when decoding without skip_special_tokens: <|eot_id|>, <|im_end|>, </s>.
_SPECIAL_TOKEN_RE = re.compile(r"<\|[A-Za-z0-9_]+\|>|</s>")
_CALCULATOR_RE = re.compile(r"<<[^<>\n]*>>")


def continuation_start(text: str) -> int:
    """Where a hallucinated next question or a special token starts in a generated text
    (len(text) when there is none): everything from here on is ignored by the grade. A header
    before any other text is the model restating the question, not a continuation."""
    end = len(text)
    for pattern in (_CONTINUATION_LINE_RE, _CONTINUATION_INLINE_RE, _SPECIAL_TOKEN_RE):
        for m in pattern.finditer(text, 0, end):
            if text[: m.start()].strip():
                end = m.start()
                break
    return end


def cut_continuation(text: str) -> str:
    """The part of a generated text before a hallucinated next question or a special token
    (`continuation_start`), without GSM8K calculator annotations."""
    return _CALCULATOR_RE.sub("", text[: continuation_start(text)])


# --------------------------------------------------------------------------------------------
# Step 2 and 3: find the marker that ends the reasoning

_MARKER_RE = re.compile(
    r"(?P<phrase>\b(?:(?:the|my|our)\s+)?final\s+answer\s+is|\bthe\s+answer\s+is)[ \t]*:?"
    # "####" only before something that can start an answer, so that a markdown heading
    # ("#### Step 2") is no marker
    r"|(?P<hash>####)(?=[ \t]*[-\u2212+$\u20ac\u00a3\\(\[{.\d])"
    r"|(?P<boxed>\\(?:boxed|fbox)[ \t]*\{)",
    re.IGNORECASE,
)
_PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t]*\n")
# what an answer starts with when it is a number or a formula (not a word)
_ANSWER_START_RE = re.compile(r"[\s*`]*(?:[-\u2212+$\u20ac\u00a3\u00a5\u20b9\\(\[{.\d]|[a-zA-Z](?![a-zA-Z]))")


@dataclass(frozen=True)
class _Marker:
    start: int
    answer: str  # raw answer text after the marker


def _closing_brace(text: str, open_pos: int) -> int | None:
    """Index of the brace closing the one at open_pos, or None when the text ends first."""
    depth = 0
    for i in range(open_pos, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _answer_line(text: str, pos: int) -> str:
    """The answer written after a marker ending at pos: the rest of the line, or the next line
    when the marker ends its line ("The answer is:\\n72")."""
    rest = text[pos:].lstrip(" \t")
    if rest.startswith("\n"):
        rest = rest.lstrip()
    return rest.split("\n", 1)[0]


# A phrase marker counts where a sentence starts ("The answer is: 72", "So the answer is 72",
# "Therefore, the final answer is 7"), not inside one: "We are given that the answer is 2, so
# ..." (common in MetaMathQA's backward questions) or "I think the answer is correct" state no
# answer. Between the sentence's start and the marker may stand markdown and an opening word.
_SENTENCE_OPENING_RE = re.compile(
    r"[\s*_#>-]*"
    r"(?P<word>\b(?:so|thus|therefore|hence|and|finally|overall|in\s+conclusion|in\s+total)\b[\s,]*)?\Z",
    re.IGNORECASE,
)


# Words that conclude whatever precedes them, punctuated or not; "and", "finally", "in total"
# still need a sentence or clause boundary before them.
_CONCLUDING_WORD_RE = re.compile(r"(?:so|thus|therefore|hence)\b", re.IGNORECASE)


def _starts_sentence(text: str, pos: int) -> bool:
    """Whether a phrase marker at pos opens a sentence or a concluding clause (", so the answer
    is 72")."""
    window_start = max(0, pos - 80)  # reaches back past any opening words
    window = text[window_start:pos]
    opening = _SENTENCE_OPENING_RE.search(window)
    if opening.group("word") and _CONCLUDING_WORD_RE.match(opening.group("word")):
        return True  # "... 3 bolts of fabric so the answer is 3": a conclusion after any word
    before = window[: opening.start()].rstrip(" \t")
    if not before:
        return window_start == 0 or "\n" in window
    ends = ".!?:;,)" if opening.group("word") else ".!?:;"
    return before[-1] in ends or "\n" in window[len(before):]


def _find_markers(text: str) -> list[_Marker]:
    markers = []
    for m in _MARKER_RE.finditer(text):
        phrase = m.group("phrase")
        # A capitalised phrase counts after any word: chain-of-thought lines often end without a
        # period ("5+20+5=30 minutes The answer is 30."), and the reference's parser accepts them.
        if phrase and not (phrase[0].isupper() or _starts_sentence(text, m.start())):
            continue
        if m.group("boxed"):
            close = _closing_brace(text, m.end() - 1)
            if close is None:  # a box cut off by the token limit holds no answer
                continue
            markers.append(_Marker(m.start(), text[m.end():close]))
        else:
            markers.append(_Marker(m.start(), _answer_line(text, m.end())))
    return markers


def _cut_after_first_answer(text: str, markers: list[_Marker]) -> str:
    """Cut at the first blank line after the first marker's answer: what follows is a new
    paragraph, written after the reasoning ended."""
    first = markers[0]
    answer_end = text.find(first.answer, first.start) + len(first.answer)  # the answer is in text
    m = _PARAGRAPH_BREAK_RE.search(text, answer_end)
    return text[: m.start()] if m else text


def _final_marker_answer(text: str) -> str | None:
    markers = _find_markers(text)
    if not markers:
        return None
    text = _cut_after_first_answer(text, markers)
    markers = [mk for mk in markers if mk.start < len(text)]
    candidates = [mk for mk in markers if _ANSWER_START_RE.match(mk.answer)] or markers
    chosen = candidates[-1]
    if len(candidates) > 1 and _cut_by_token_limit(text, chosen, candidates[-2]):
        chosen = candidates[-2]
    return chosen.answer


def _cut_by_token_limit(text: str, last: _Marker, previous: _Marker) -> bool:
    """A model stuck repeating "The answer is: 72" stops at the token limit, possibly inside the
    last repeat ("The answer is: 7"): a last answer that ends the text and is a strict prefix of
    the answer before it is such a cut, not a new answer."""
    ends_text = text.rstrip(" \t").endswith(last.answer)
    return ends_text and len(previous.answer.strip()) > len(last.answer.strip()) > 0 \
        and previous.answer.strip().startswith(last.answer.strip())


# --------------------------------------------------------------------------------------------
# Step 4: normalise an answer text

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90,
}
_SCALE_WORDS = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9}

# LaTeX and typography that carries no value: removed before reading a number
_LATEX_NOISE = [
    (re.compile(r"\\[dt]frac"), r"\\frac"),
    (re.compile(r"\\(?:text|textbf|mathrm|mbox|mathbf)\s*\{([^{}]*)\}"), r" \1 "),
    (re.compile(r"\^\s*\{?\\circ\}?|\u00b0"), " "),  # degrees
    (re.compile(r"\\[,;:! ]|~"), " "),  # LaTeX spaces
    (re.compile(r"\{,\}"), ","),  # 1{,}080
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\\\$|\$"), " "),  # currency and math delimiters
    (re.compile(r"\\left|\\right"), ""),
    (re.compile(r"[\u2212\u2013]"), "-"),  # unicode minus and en dash
    (re.compile(r"\*\*|`"), ""),  # markdown bold and code
]

_INT = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)"  # "1,080" or "1080" (a comma only every 3 digits)
_DEC = rf"(?:{_INT}(?:\.\d+)?|\.\d+)"
_LEADING_NUMBER_RE = re.compile(
    rf"""^(?P<sign>[-+])?[ ]*(?:[$\u20ac\u00a3\u00a5\u20b9]|USD|Rs\.?)?[ ]*(?P<sign2>[-+])?[ ]*
    (?:
        (?P<whole>\d+)[ ]*\\frac\{{(?P<mn>\d+)\}}\{{(?P<md>\d+)\}}      # mixed: 2\frac{{1}}{{2}}
      | (?P<whole2>\d+)[ ]+(?P<mn2>\d+)[ ]*/[ ]*(?P<md2>\d+)(?![\d.])    # mixed: 2 1/2
      | \\frac\{{[ ]*(?P<fs>-)?[ ]*(?P<fn>{_DEC})[ ]*\}}\{{[ ]*(?P<fd>{_DEC})[ ]*\}}
      | \\frac(?P<fn2>\d)(?P<fd2>\d)                                      # \frac34
      | (?P<num>{_DEC})(?:[ ]*/[ ]*(?P<den>{_DEC}))?
    )""",
    re.VERBOSE,
)
_PERCENT_RE = re.compile(r"^\s*(?:%|percent\b|per\s+cent\b)")
_SCALE_RE = re.compile(r"^\s+(" + "|".join(_SCALE_WORDS) + r")\b", re.IGNORECASE)
_NUMBER_WORD_RE = re.compile(
    r"^(?P<tens>twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)"
    r"-(?P<unit>one|two|three|four|five|six|seven|eight|nine)\b"
    r"|^(?P<word>" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)
# After a number, these mean it is part of a larger expression ("2 + 3", "2\sqrt{3}", "2^5",
# "9 x 2"); a hyphen or a slash before a word is not one ("72-year-old", "$18/day").
_EXPRESSION_CONTINUES_RE = re.compile(
    r"^\s*(?:[*\u00d7\u00f7^_=<>\\\d]|[-+/]\s*[\d\\(.]|\.\d|(?:x|times)\s*[$\d])"
)
# A list of numbers ("3, 4") is one answer made of several values, not the number 3.
_LIST_CONTINUES_RE = re.compile(r"^\s*[,;]\s*[-+]?(?:\d|\\frac)")


_BOX_START_RE = re.compile(r"\\(?:boxed|fbox)[ \t]*\{")


def _strip_wrappers(answer: str) -> str:
    s = answer.strip()
    box = _BOX_START_RE.match(s)
    if box:
        close = _closing_brace(s, box.end() - 1)
        if close is not None:
            s = s[box.end():close].strip()
    for left, right in (("\\(", "\\)"), ("\\[", "\\]"), ("$", "$")):
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left): len(s) - len(right)].strip()
    return s


# words before a number that do not change it: "about 7", "a total of 72", "\approx 33.3",
# "therefore 3" (GSM8K's own "The answer is therefore 3.")
_FILLER_RE = re.compile(
    r"^(?:(?:approximately|approx\.?|about|around|roughly|exactly|only|just|a\s+total\s+of|"
    r"therefore|thus|hence|then|\\approx|~|\u2248)\s*)+",
    re.IGNORECASE,
)


def _clean_for_number(answer: str) -> str:
    s = answer
    for pattern, repl in _LATEX_NOISE:
        s = pattern.sub(repl, s)
    s = s.strip()
    s = re.sub(r"^[:\s]+", "", s)
    s = _FILLER_RE.sub("", s)
    return s


def _canonical(value: Fraction, written: str | None = None) -> str:
    """A number as extract_answer returns it: the written decimal without separators when there
    is one (keeps "29.00" recognisable), else an integer or "p/q"."""
    if written is not None:
        return written
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator}"


def _ratio(numerator: str, denominator: str, whole: str = "0") -> Fraction | None:
    """whole + numerator/denominator from written decimals; None for a zero denominator."""
    den = Fraction(denominator.replace(",", ""))
    if den == 0:
        return None
    return int(whole) + Fraction(numerator.replace(",", "")) / den


def _read_number(s: str) -> tuple[Fraction, str | None, str] | None:
    """Read a number at the start of a cleaned answer: (value, written form or None, rest)."""
    m = _LEADING_NUMBER_RE.match(s)
    if not m:
        return _read_number_word(s)
    negative = (m.group("sign") == "-") != (m.group("sign2") == "-")
    written = None
    g = m.groupdict()
    if g["whole"] is not None:
        value = _ratio(g["mn"], g["md"], whole=g["whole"])
    elif g["whole2"] is not None:
        value = _ratio(g["mn2"], g["md2"], whole=g["whole2"])
    elif g["fn"] is not None:
        value = _ratio(g["fn"], g["fd"])
        if g["fs"]:
            negative = not negative
    elif g["fn2"] is not None:
        value = _ratio(g["fn2"], g["fd2"])
    else:
        num = g["num"].replace(",", "")
        if g["den"] is not None:
            value = _ratio(num, g["den"])
        else:
            value = Fraction(num)
            written = ("0" + num) if num.startswith(".") else num
    if value is None:
        return None
    if negative:
        value = -value
        if written is not None:
            written = "-" + written
    return value, written, s[m.end():]


def _read_number_word(s: str) -> tuple[Fraction, str | None, str] | None:
    m = _NUMBER_WORD_RE.match(s)
    if not m:
        return None
    rest = s[m.end():]
    if re.match(r"\s+of\b", rest, re.IGNORECASE):  # "one of the ..." is no number
        return None
    if m.group("tens"):
        value = _NUMBER_WORDS[m.group("tens").lower()] + _NUMBER_WORDS[m.group("unit").lower()]
    else:
        value = _NUMBER_WORDS[m.group("word").lower()]
    return Fraction(value), None, rest


def _number_answer(answer: str) -> tuple[Fraction, str] | None:
    """(value, canonical string) when the answer text is a number, possibly followed by units,
    words or punctuation; None when it is something else (an expression, a list, prose)."""
    s = _clean_for_number(answer)
    parsed = _read_number(s)
    if parsed is None:
        return None
    value, written, rest = parsed
    scale = _SCALE_RE.match(rest)
    if scale:
        value *= _SCALE_WORDS[scale.group(1).lower()]
        written = None
        rest = rest[scale.end():]
    pct = _PERCENT_RE.match(rest)
    if pct:
        rest = rest[pct.end():]
    if rest and not rest[0].isspace() and rest[0].isalpha():
        return None  # "2x", "5km": a letter glued to the number makes a term, not a unit
    if rest.startswith("(") or _EXPRESSION_CONTINUES_RE.match(rest) or _LIST_CONTINUES_RE.match(rest):
        return None
    return value, _canonical(value, written)


def _after_last_equals(s: str) -> str | None:
    """"48/2 = 24" -> "24"; "x = 5" -> "5"; None without a plain "=" (not "<=", ">=")."""
    parts = re.split(r"(?<![<>!=])=(?!=)|\\approx|\u2248", s)
    if len(parts) < 2:
        return None
    last = parts[-1].strip()
    return last or None


_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)")


def normalize_answer(answer: str) -> str | None:
    """Canonical form of an answer text found after a marker (or a bare reference answer);
    None when nothing is left."""
    s = _strip_wrappers(answer)
    number = _number_answer(s)
    if number is None:
        rhs = _after_last_equals(s)
        if rhs is not None:
            number = _number_answer(rhs)
    if number is not None:
        return number[1]
    # Not a number: keep the formula, drop a trailing sentence and punctuation.
    s = _SENTENCE_END_RE.split(s, 1)[0]
    s = s.strip().rstrip(".,;:!").strip()
    s = _strip_wrappers(s)
    s = s.replace("**", "").strip()
    return s or None


# --------------------------------------------------------------------------------------------
# Public API: extraction

# a number anywhere in a text, for the flexible fallback: "-5", "$1,080", "3.5", "48/2"
_ANY_NUMBER_RE = re.compile(
    r"(?<![\w.,])[-\u2212]?\$?(?:\d{1,3}(?:,\d{3})+(?![\d])|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?"
)


def _last_number(text: str) -> str | None:
    matches = _ANY_NUMBER_RE.findall(text)
    for raw in reversed(matches):
        number = _number_answer(raw)
        if number is not None:
            return number[1]
    return None


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown grading mode {mode!r}; available: {', '.join(MODES)}")


def extract_answer(text: str, mode: str = "strict") -> str | None:
    """The final answer of a model output or a reference (see the module docstring for the
    rules); None when there is none."""
    _check_mode(mode)
    text = cut_continuation(text or "")
    raw = _final_marker_answer(text)
    answer = normalize_answer(raw) if raw is not None else None
    if answer is None and mode == "flexible":
        answer = _last_number(text)
    return answer


def reference_answer(reference: str) -> str | None:
    """The answer of a reference: the marker answer of a GSM8K answer ("... #### 72") or a
    MetaMathQA response ("... The answer is: 72"), else the whole text as a bare answer ("72",
    "\\frac{\\sqrt{2}}{2}")."""
    marked = extract_answer(reference, "strict")
    if marked is not None:
        return marked
    return normalize_answer(reference or "")


# --------------------------------------------------------------------------------------------
# Public API: comparison


def _as_number(answer: str) -> Fraction | None:
    number = _number_answer(answer)
    return number[0] if number is not None else None


# prose: three letters in a row once LaTeX commands (\frac, \sqrt, \pi) are removed
_PROSE_RE = re.compile(r"[A-Za-z]{3,}")
_LATEX_COMMAND_RE = re.compile(r"\\[A-Za-z]+")


def _is_prose(answer: str) -> bool:
    return bool(_PROSE_RE.search(_LATEX_COMMAND_RE.sub(" ", answer)))


def answers_match(predicted: str | None, gold: str | None) -> bool:
    """Whether two extracted answers are equal: by value when both are numbers, else by
    Math-Verify's symbolic check (bounded in time, see the module docstring)."""
    if predicted is None or gold is None:
        return False
    gold_value = _as_number(gold)
    pred_value = _as_number(predicted)
    if gold_value is not None and pred_value is not None:
        return abs(gold_value - pred_value) <= NUMERIC_TOLERANCE
    if gold_value is not None and _is_prose(predicted):
        return False
    if "".join(gold.split()) == "".join(predicted.split()):
        return True
    return symbolic_equal(gold, predicted)


def is_correct(prediction: str, reference: str, mode: str = "strict") -> bool:
    """Whether a model output answers like the reference (a GSM8K answer, a MetaMathQA response
    or a bare answer)."""
    return answers_match(extract_answer(prediction, mode), reference_answer(reference))


@dataclass(frozen=True)
class Grade:
    """The grade of one evaluated item, as stored in a predictions row."""

    extracted: str | None  # strict answer: after a marker, None without one
    extracted_flexible: str | None  # strict answer, else the last number of the output
    correct_strict: bool
    correct_flexible: bool


def grade(generated: str, reference: str) -> Grade:
    """Grade one model output against its reference in both modes."""
    gold = reference_answer(reference)
    strict = extract_answer(generated, "strict")
    flexible = strict if strict is not None else extract_answer(generated, "flexible")
    correct_strict = answers_match(strict, gold)
    # same answer, same verdict: no second (possibly symbolic) comparison
    correct_flexible = correct_strict if flexible == strict else answers_match(flexible, gold)
    return Grade(strict, flexible, correct_strict, correct_flexible)


def accuracy(grades: Iterable[Grade], mode: str = "strict") -> float:
    """Fraction of correct grades in the given mode. Raises ValueError for no grades: an
    accuracy of nothing is unknown, not 0."""
    _check_mode(mode)
    flags = [g.correct_strict if mode == "strict" else g.correct_flexible for g in grades]
    if not flags:
        raise ValueError("accuracy of an empty set of grades is undefined")
    return sum(flags) / len(flags)
