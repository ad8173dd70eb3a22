r"""Answer normalisation shared by the math verifiers: numbers and simple LaTeX.

`normalize_number` turns the ways people write one number into one canonical string:

    normalize_number("1,234")   == "1234"      # thousands separators (groups of three only)
    normalize_number("$-5.50")  == "-5.5"      # currency sign, trailing zeros
    normalize_number("12.0")    == "12"        # trailing ".0"
    normalize_number("1,2")     is None        # not a number: could be a list of two answers

`answers_match(a, b)` compares two extracted answers: numerically when both are numbers or
simple fractions (`\frac{1}{2}`, `1/2`, `0.5` all match), otherwise as normalised LaTeX text.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# Optional sign, optional "$", digits with either no commas or comma-separated groups of three,
# optional decimal part; or a bare ".5". The sign may come before or after the "$".
_NUMBER = re.compile(r"^([+-]?)\$?([+-]?)(\d{1,3}(?:,\d{3})+|\d+)?(\.\d+)?$")
_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$")
_SLASH = re.compile(r"^(-?\d+)/(-?\d+)$")
_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_SHORT_FRAC = re.compile(r"\\frac(\d)(\d)")  # \frac12 -> \frac{1}{2}
_SHORT_SQRT = re.compile(r"\\sqrt(\d)")  # \sqrt2 -> \sqrt{2}
_LHS_VARIABLE = re.compile(r"^[a-zA-Z]\s*=")  # "x = 5" -> "5"
_DROPPED = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "\\$", "$", "\\%", "%",
            "^{\\circ}", "^\\circ", "\\displaystyle")


def _clean_number_text(text: str) -> str:
    return text.strip().replace("\u2212", "-").replace(" ", "").rstrip(".")


def normalize_number(text: str) -> str | None:
    """Canonical decimal string for a number written as `text`, or None if it is not one.

    Accepts a sign (also the Unicode minus), a "$", thousands commas in groups of three, a
    decimal part and a trailing sentence period; drops trailing zeros after the point.
    """
    match = _NUMBER.match(_clean_number_text(str(text)))
    if match is None:
        return None
    sign_a, sign_b, integer, fraction = match.groups()
    if (sign_a and sign_b) or (integer is None and fraction is None):
        return None
    negative = "-" in (sign_a, sign_b)
    try:
        value = Decimal((integer or "0").replace(",", "") + (fraction or ""))
    except InvalidOperation:
        return None
    value = -value if negative else value
    canonical = format(value.normalize(), "f")
    return "0" if canonical in ("-0", "0") else canonical


def to_fraction(text: str) -> Fraction | None:
    """The exact value of a number, `a/b` or `\\frac{a}{b}` (after `normalize_latex`), else None."""
    number = normalize_number(text)
    if number is not None:
        return Fraction(Decimal(number))
    for pattern in (_FRAC, _SLASH):
        match = pattern.match(text)
        if match is None:
            continue
        groups = match.groups()
        sign = -1 if len(groups) == 3 and groups[0] == "-" else 1
        num, den = int(groups[-2]), int(groups[-1])
        return None if den == 0 else sign * Fraction(num, den)
    return None


def normalize_latex(text: str) -> str:
    """A loose canonical form of a LaTeX answer, for string comparison.

    Drops spacing commands, `\\left`/`\\right`, dollar and percent signs, degree marks and all
    whitespace; unwraps `\\text{...}`; `\\dfrac`/`\\tfrac` -> `\\frac`; `\\frac12` -> `\\frac{1}{2}`;
    strips a leading `x =` and a trailing period.
    """
    text = str(text).strip().replace("\u2212", "-").replace("{,}", ",")
    text = _LHS_VARIABLE.sub("", text, count=1)
    text = _TEXT_WRAPPERS.sub(r"\1", text)
    for token in _DROPPED:
        text = text.replace(token, "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _SHORT_FRAC.sub(r"\\frac{\1}{\2}", text)
    text = _SHORT_SQRT.sub(r"\\sqrt{\1}", text)
    text = "".join(text.split()).rstrip(".")
    if text.startswith("."):
        text = "0" + text
    return text


def answers_match(predicted: str, ground_truth: str) -> bool:
    """True if two answers are equal as numbers/fractions, or as normalised LaTeX strings."""
    pred, truth = normalize_latex(predicted), normalize_latex(ground_truth)
    pred_value, truth_value = to_fraction(pred), to_fraction(truth)
    if pred_value is not None and truth_value is not None:
        return pred_value == truth_value
    return pred != "" and pred == truth
