"""ROUGE-L: how much of one text's word order another text keeps (Lin 2004, "ROUGE: A Package for
Automatic Evaluation of Summaries", section 3).

With LCS(X, Y) the length of the longest common subsequence of the token lists X (reference,
length m) and Y (candidate, length n):

    R = LCS / m,    P = LCS / n,    F = (1 + beta^2) R P / (R + beta^2 P)

peftlab uses beta = 1, so F = 2 R P / (R + P): the `rougeL` F-measure of Google's `rouge-score`
package, which Self-Instruct (Wang et al. 2022, arXiv 2212.10560) uses to drop a generated
instruction whose ROUGE-L with any kept instruction is 0.7 or more. Tokens follow `rouge-score`'s
default tokenizer without stemming: lowercase, every run of characters other than a-z and 0-9
is a separator.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lowercased alphanumeric words, as `rouge-score` tokenizes (no stemming).

    >>> tokenize("Reverse the letters: 'apple'!")
    ['reverse', 'the', 'letters', 'apple']
    """
    return _NON_ALNUM.sub(" ", text.lower()).split()


def lcs_length(x: list[str], y: list[str]) -> int:
    """Length of the longest common subsequence, by the dynamic-programming table
    c[i][j] = LCS of x[:i] and y[:j] (kept one row at a time: O(len(y)) memory).

    >>> lcs_length("a b c d".split(), "a c d e".split())
    3
    """
    previous = [0] * (len(y) + 1)
    for xi in x:
        current = [0]
        for j, yj in enumerate(y):
            current.append(previous[j] + 1 if xi == yj else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1 (beta = 1) of `candidate` against `reference`; 0.0 when either has no tokens.
    Symmetric, since F1 treats precision and recall alike.

    >>> round(rouge_l("Sort the words in alphabetical order.", "Sort the words."), 3)
    0.667
    """
    ref, cand = tokenize(reference), tokenize(candidate)
    if not ref or not cand:
        return 0.0
    lcs = lcs_length(ref, cand)
    if lcs == 0:
        return 0.0
    recall, precision = lcs / len(ref), lcs / len(cand)
    return 2 * recall * precision / (recall + precision)


def max_rouge_l(candidate: str, references: Iterable[str]) -> float:
    """The highest ROUGE-L of `candidate` against any of `references` (0.0 for none).

    >>> round(max_rouge_l("Count the letters.", ["Count the letters in it.", "Sort the words."]), 3)
    0.75
    """
    return max((rouge_l(r, candidate) for r in references), default=0.0)
