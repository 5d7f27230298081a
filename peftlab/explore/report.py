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
