"""Small tables for notebooks and benchmark scripts: plain text that reads well in a terminal,
renders as a table in Jupyter, and compares exactly under nbval (values are pre-formatted).
"""

from __future__ import annotations

from collections.abc import Sequence

from IPython.display import Markdown

from ..measure import mib  # noqa: F401  (notebooks import it with the tables)


def table(rows: Sequence[Sequence], headers: Sequence[str]) -> Markdown:
    """A Markdown table; every cell is shown with str()."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return Markdown("\n".join(lines))


def claim_check(rows: Sequence[tuple[str, str, str, bool | str]]) -> Markdown:
    """Rows of (short answer, what the source says, measured here, verdict).

    A boolean verdict reads "holds" / "does not hold"; a string is shown as given.
    """
    verdict = {True: "holds", False: "does not hold"}
    return table([(a, s, m, verdict.get(v, v) if isinstance(v, bool) else v) for a, s, m, v in rows],
                 ["short answer", "source", "measured here", "verdict"])


def better_by_both(a: dict, b: dict, what: str) -> bool | str:
    """Does `a` beat `b`? Both are `instruct.evaluate` results: higher "exact_match", lower "loss".
    True or False where the two measures agree; otherwise a "mixed: ..." verdict naming the one that favours `what`.

    >>> better_by_both({"exact_match": 0.5, "loss": 2.0}, {"exact_match": 0.1, "loss": 1.0}, "masking")
    'mixed: exact match favours masking, loss does not'
    """
    em, loss = a["exact_match"] > b["exact_match"], a["loss"] < b["loss"]
    if em == loss:
        return em
    return f"mixed: {'exact match' if em else 'loss'} favours {what}, {'loss' if em else 'exact match'} does not"
