"""Translation-like pairs a tiny model learns fast: dates -> YYYY/MM/DD, number words -> digits."""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable
from typing import Any

from framework.core.errors import UserError
from framework.testing.synthetic_squad import MONTHS

Rows = list[dict[str, Any]]


# --------------------------------------------------------------------------------------------
# synthetic_seq2seq
# --------------------------------------------------------------------------------------------

_ONES = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_to_words(n: int) -> str:
    """English words for 0 <= n < 1,000,000 (e.g. 'three hundred forty-two thousand five')."""
    if not 0 <= n < 1_000_000:
        raise ValueError(n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    rest = n % 1000
    return (
        number_to_words(n // 1000)
        + " thousand"
        + ("" if rest == 0 else " " + number_to_words(rest))
    )


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


_DATE_FORMATS: tuple[Callable[[datetime.date], str], ...] = (
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1][:3]} {d.year}",
    lambda d: f"the {_ordinal(d.day)} of {MONTHS[d.month - 1]}, {d.year}",
    lambda d: f"{d.strftime('%A')}, {MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{MONTHS[d.month - 1]} {_ordinal(d.day)} {d.year}",
)


def _seq2seq_rows(task: str, n: int, rng: random.Random, exclude: set) -> Rows:
    rows: Rows = []
    lo, hi = datetime.date(1950, 1, 1).toordinal(), datetime.date(2049, 12, 31).toordinal()
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise UserError(
                f"synthetic_seq2seq: cannot draw {n} distinct '{task}' examples; lower num_train/num_validation"
            )
        if task == "dates":
            d = datetime.date.fromordinal(rng.randint(lo, hi))
            source, target = rng.choice(_DATE_FORMATS)(d), d.strftime("%Y/%m/%d")
        else:
            k = rng.choice((1, 2, 3, 3, 4, 4, 5, 6, 6, 6))
            value = rng.randint(0 if k == 1 else 10 ** (k - 1), 10**k - 1)
            source, target = number_to_words(value), str(value)
        if source in exclude:
            continue
        exclude.add(source)
        rows.append({"source": source, "target": target})
    return rows
