"""Command-line number types with bounds, for the sandbox's and the load tests' options."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

__all__ = ["bounded", "fraction", "non_negative_float", "non_negative_int", "positive_float",
           "positive_int"]

N = TypeVar("N", int, float)


def bounded(convert: Callable[[str], N], what: str, *, above: float | None = None,
            at_least: float | None = None, at_most: float | None = None) -> Callable[[str], N]:
    """An argparse ``type=``: ``convert(text)``, finite and within the bounds, else
    ``argparse.ArgumentTypeError("expected <what>, got '<text>'")``."""

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or (above is not None and value <= above) \
                or (at_least is not None and value < at_least) \
                or (at_most is not None and value > at_most):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what.replace(" ", "_")
    return parse


positive_int = bounded(int, "a positive integer", at_least=1)
non_negative_int = bounded(int, "an integer >= 0", at_least=0)
positive_float = bounded(float, "a number > 0", above=0)
non_negative_float = bounded(float, "a number >= 0", at_least=0)
fraction = bounded(float, "a number in [0, 1]", at_least=0, at_most=1)
