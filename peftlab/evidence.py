"""Evidence: the one place where a verdict on a measured claim is made.

A claim such as "LoRA at rank 8 matches full fine-tuning" or "prompt tuning beats the base model by more
than 2 points" is checked on a handful of runs, one per seed. `compare` takes those per-seed values and
returns an `Evidence`: the difference of the means, its confidence interval, and a verdict, "holds",
"does not hold" or "inconclusive", read off where the interval lies with respect to the margin.

Why a t interval. With 3 to 5 seeds the standard deviation is itself estimated from 3 to 5 values, and
the interval has to be widened for that: at n=5 the 97.5% quantile is t=2.776 on 4 degrees of freedom,
not z=1.96. An interval built on the normal quantile (or a bootstrap over five values, which is narrower
still) covers the true difference far less often than it says: about 88% instead of 95% at three seeds
each (tests/test_evidence.py measures it). Two sets of seeds use Welch's interval (unequal variances,
Welch-Satterthwaite degrees of freedom, usually not an integer); one set against a published number uses
Student's one-sample interval; `paired=True` uses the one-sample interval on the differences a_i - b_i.

The margin is part of the claim and is declared before the runs, in the units of the values: "a beats b"
is `claim="greater", margin=0`; "a beats b by more than 0.02" is `margin=0.02`; "a and b agree within
0.05" is `claim="equivalent", margin=0.05`. Choosing the margin after seeing the interval makes any
verdict possible. The verdict comes from the two-sided interval at `confidence` (0.95 by default):

- "greater": holds if low > margin, does not hold if high < margin; "less" is the mirror (a is below b by
  more than margin, as for losses): holds if high < -margin, does not hold if low > -margin.
- "equivalent": holds if -margin < low and high < margin; does not hold if the interval lies entirely
  outside (-margin, margin). This is the two one-sided tests (TOST) procedure. The classic TOST at level
  alpha uses the (1 - 2 alpha) interval (90% for alpha = 5%); here the same 95% interval is used for every
  claim, which is the conservative choice (TOST at alpha = 2.5%).

Anything else is "inconclusive": more seeds, not a different reading, is the answer. A one-sided claim
read off a two-sided 95% interval errs at most 2.5% of the time when the claim is false.

The t quantile comes from scipy when it is installed (it is not a dependency of peftlab); otherwise from a
short, exact inversion of Student's t distribution function (`_t_ppf`), checked against a table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence, Union

try:
    from scipy.stats import t as _scipy_t
except ImportError:  # scipy is optional
    _scipy_t = None

CLAIMS = ("greater", "less", "equivalent")


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes 6.4)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 / max(1.0 - (a + b) * x / (a + 1.0), tiny)  # > 0 for the x where it is used
    h = d
    for m in range(1, 100_000):
        for aa in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d, c = 1.0 + aa * d, 1.0 + aa / c
            d, c = 1.0 / (d if abs(d) > tiny else tiny), (c if abs(c) > tiny else tiny)
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            return h
    raise ArithmeticError("incomplete beta: continued fraction did not converge")


def _t_tail(t: float, df: float) -> float:
    """P(T > t) for t >= 0: one half of the regularized incomplete beta I_x(df/2, 1/2), x = df/(df+t^2)."""
    a, b, x = df / 2, 0.5, df / (df + t * t)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return 0.5 * front * _betacf(a, b, x) / a
    return 0.5 * (1.0 - front * _betacf(b, a, 1.0 - x) / b)


def _t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t without scipy: Newton's method on the distribution function.

    On t > 0 the distribution function is concave, so Newton's iterates, started at the normal quantile
    (always below the t quantile), rise monotonically to the root; each step costs one incomplete beta.
    """
    if p <= 0.5:
        return 0.0 if p == 0.5 else -_t_ppf(1.0 - p, df)
    z = NormalDist().inv_cdf(p)
    if df > 1e5:  # Cornish-Fisher expansion (Abramowitz and Stegun 26.7.5); its next term is < 1e-14 here
        return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    density = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    t = z
    for _ in range(500):
        step = (_t_tail(t, df) - (1.0 - p)) / (density * (1.0 + t * t / df) ** (-(df + 1) / 2))
        t += step
        if step <= 1e-13 * max(t, 1.0):
            return t
    raise ArithmeticError(f"t quantile did not converge for p={p}, df={df}")


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t distribution on df (> 0, not necessarily integer) degrees of freedom.

    >>> round(t_quantile(0.975, 4), 6)
    2.776445
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie strictly between 0 and 1, got {p!r}")
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df!r}")
    return float(_scipy_t.ppf(p, df)) if _scipy_t is not None else _t_ppf(p, df)


@dataclass(frozen=True)
class Evidence:
    """A verdict with what it rests on. `estimate`, `low`, `high` and `margin` are in the units of the values.

    `n` is the number of seeds (the smaller side for two samples); `sizes` has one entry per side (one
    entry against a constant). `str()` uses `unit`, `scale` and `digits`; `format()` overrides them.
    """

    verdict: str
    estimate: float
    low: float
    high: float
    n: int
    sizes: tuple[int, ...]
    df: float
    claim: str
    margin: float
    confidence: float
    paired: bool = False
    unit: str = ""
    scale: float = 1.0
    digits: int | None = None

    def format(self, *, scale: float | None = None, unit: str | None = None, digits: int | None = None) -> str:
        """`+3.1 points [+1.2, +5.0], 5 seeds: holds`. Values are multiplied by `scale` and followed by `unit`;
        `digits` (decimals) defaults to enough to show the interval's half-width to two significant figures.

        >>> compare([0.61, 0.63, 0.62], [0.58, 0.59, 0.60]).format(scale=100, unit="points")
        '+3.0 points [+0.7, +5.3], 3 seeds: holds'
        """
        scale = self.scale if scale is None else scale
        unit = self.unit if unit is None else unit
        digits = self.digits if digits is None else digits
        if digits is None:
            half = abs(self.high - self.low) * abs(scale) / 2
            digits = 3 if half == 0 else min(6, max(0, 1 - math.floor(math.log10(half))))
        est, low, high = (f"{round(v * scale, digits) + 0.0:+.{digits}f}" for v in (self.estimate, self.low, self.high))
        if self.sizes == (0,):  # `exact`: a deterministic quantity, no interval
            return f"{est}{' ' + unit if unit else ''}, exact (deterministic): {self.verdict}"
        seeds = " vs ".join(str(s) for s in dict.fromkeys(self.sizes)) + (" paired" if self.paired else "")
        return f"{est}{' ' + unit if unit else ''} [{low}, {high}], {seeds} seeds: {self.verdict}"

    __str__ = format


Values = Union[Sequence[float], float]


def _values(name: str, x: object) -> list[float]:
    try:
        values = [float(v) for v in x]  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of per-seed numbers, got {x!r}") from None
    if len(values) < 2:
        raise ValueError(f"{name} must have at least 2 values (one per seed), got {len(values)}")
    if not all(map(math.isfinite, values)):
        raise ValueError(f"{name} must contain only finite numbers (no NaN or inf), got {values}")
    return values


def _mean_var(x: list[float]) -> tuple[float, float]:
    mean = math.fsum(x) / len(x)
    return mean, math.fsum((v - mean) ** 2 for v in x) / (len(x) - 1)


def compare(a: Sequence[float], b: Values, *, claim: str = "greater", margin: float = 0.0, confidence: float = 0.95,
            paired: bool = False, unit: str = "", scale: float = 1.0, digits: int | None = None) -> Evidence:
    """Weigh the claim that a (per-seed values) is greater than, less than, or equivalent to b.

    `b` is per-seed values (Welch's interval) or a plain number such as a paper's figure (one-sample
    interval). `paired=True`: a and b come from the same seeds (same split, same initialisation, one run
    of each method per seed), so the seed-to-seed variation cancels in a_i - b_i; use it only then.
    `margin` (>= 0, > 0 for "equivalent") is in the units of the values; `unit`, `scale` and `digits`
    only set how `str()` prints (see `Evidence.format`).

    >>> e = compare([0.21, 0.19, 0.22, 0.20, 0.18], [0.33, 0.30, 0.35, 0.31, 0.32], claim="less")
    >>> e.verdict, e.n
    ('holds', 5)
    >>> print(e)
    -0.122 [-0.148, -0.096], 5 seeds: holds
    """
    if claim not in CLAIMS:
        raise ValueError(f"claim must be one of {', '.join(map(repr, CLAIMS))}, got {claim!r}")
    if not (isinstance(confidence, (int, float)) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if claim == "equivalent" and margin == 0:
        raise ValueError("margin must be > 0 for claim='equivalent' (agreement within ±margin)")
    xa = _values("a", a)
    try:
        len(b)  # type: ignore[arg-type]
        xb: list[float] | None = _values("b", b)
    except TypeError:  # a plain number
        xb = None
        if not (isinstance(b, (int, float)) or hasattr(b, "__float__")) or not math.isfinite(float(b)):
            raise ValueError(f"b must be per-seed values or a finite number, got {b!r}") from None
    if paired and (xb is None or len(xb) != len(xa)):
        raise ValueError(f"paired=True needs b to be per-seed values of the same length as a ({len(xa)}), got "
                         f"{'a number' if xb is None else len(xb)}")

    if xb is None or paired:  # one sample: a - b, or the differences a_i - b_i
        diffs = [v - float(b) for v in xa] if xb is None else [u - v for u, v in zip(xa, xb)]
        estimate, var = _mean_var(diffs)
        se, df = math.sqrt(var / len(diffs)), len(diffs) - 1.0
    else:  # Welch: unequal variances, Welch-Satterthwaite degrees of freedom
        (ma, va), (mb, vb) = _mean_var(xa), _mean_var(xb)
        va, vb = va / len(xa), vb / len(xb)
        estimate, se = ma - mb, math.sqrt(va + vb)
        denom = va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1)
        df = (va + vb) ** 2 / denom if denom > 0 else len(xa) + len(xb) - 2.0
    half = t_quantile(0.5 + confidence / 2, df) * se if se > 0 else 0.0  # zero variance: a point
    low, high = estimate - half, estimate + half

    if claim == "equivalent":
        verdict = "holds" if -margin < low and high < margin else (
            "does not hold" if high < -margin or low > margin else "inconclusive")
    else:
        lo, hi = (low, high) if claim == "greater" else (-high, -low)  # "less" is "greater" for b - a
        verdict = "holds" if lo > margin else "does not hold" if hi < margin else "inconclusive"
    sizes = (len(xa),) if xb is None or paired else (len(xa), len(xb))
    return Evidence(verdict, estimate, low, high, min(sizes), sizes, df, claim, float(margin), float(confidence),
                    paired, unit, scale, digits)


def exact(value: float, reference: float = 0.0, *, claim: str = "greater", margin: float = 0.0, unit: str = "",
          scale: float = 1.0, digits: int | None = None) -> Evidence:
    """Weigh a claim about a quantity that does not vary from seed to seed: a byte count of one
    deterministic training step, a parameter count. The estimate is value - reference; with no
    interval the verdict is "holds" or "does not hold" against the declared margin, the same rule as
    `compare` with a point interval (at the margin itself: inconclusive). Use it only where a second
    seed would give the same number; anything trained or timed goes through `compare`.

    >>> print(exact(0.62, 0.5, claim="greater", margin=0.1, scale=100, unit="points"))
    +12.000 points, exact (deterministic): holds
    >>> exact(1.0, 1.03, claim="equivalent", margin=0.05).verdict
    'holds'
    """
    if claim not in CLAIMS:
        raise ValueError(f"claim must be one of {', '.join(map(repr, CLAIMS))}, got {claim!r}")
    for name, x in (("value", value), ("reference", reference), ("margin", margin)):
        if not (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)):
            raise ValueError(f"{name} must be a finite number, got {x!r}")
    if margin < 0 or (claim == "equivalent" and margin == 0):
        raise ValueError(f"margin must be >= 0 ({'> 0 ' if claim == 'equivalent' else ''}for claim={claim!r}), "
                         f"got {margin!r}")
    d = float(value) - float(reference)
    if claim == "equivalent":
        verdict = "holds" if abs(d) < margin else "does not hold" if abs(d) > margin else "inconclusive"
    else:
        signed = d if claim == "greater" else -d
        verdict = "holds" if signed > margin else "does not hold" if signed < margin else "inconclusive"
    return Evidence(verdict, d, d, d, 0, (0,), 0.0, claim, float(margin), 1.0, False, unit, scale, digits)
