"""peftlab.evidence: the t quantile, the calibration of the verdicts by simulation, and every bad input."""

import math
import random
import statistics

import pytest

from peftlab import evidence
from peftlab.evidence import Evidence, compare, t_quantile

# Two-sided 95% quantiles t_{0.975, df} from the standard tables.
T_TABLE = {2: 4.302653, 4: 2.776445, 9: 2.262157, 30: 2.042272, 10**7: 1.959964, math.inf: 1.959964}
GRID_DF = [0.7, 1, 1.5, 2, 2.37, 3, 4, 4.81, 5.5, 7.9, 12.25, 30, 117.3, 1e4, 3e5]
GRID_P = [0.51, 0.6, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995, 0.9995]


@pytest.mark.parametrize("df, expected", T_TABLE.items())
def test_t_quantile_matches_the_table(df, expected):
    assert evidence._t_ppf(0.975, df) == pytest.approx(expected, abs=1e-5)  # the scipy-free code itself
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-5)  # whichever the library uses
    assert evidence._t_ppf(0.025, df) == pytest.approx(-expected, abs=1e-5)  # symmetric
    assert evidence._t_ppf(0.5, df) == 0.0


def test_t_quantile_matches_scipy_on_a_grid_with_non_integer_df():
    stats = pytest.importorskip("scipy.stats")
    for df in GRID_DF:
        for p in GRID_P:
            assert evidence._t_ppf(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8, abs=1e-10), (p, df)


def test_t_quantile_inverts_the_exact_distribution_function():
    # mpmath (installed with torch, through sympy) computes the incomplete beta to 25 digits: the quantile
    # found without scipy must map back to p.
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 25
    for df in GRID_DF[:-1]:
        for p in (0.6, 0.9, 0.975, 0.9995):
            t = evidence._t_ppf(p, df)
            cdf = 1 - mpmath.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True) / 2
            assert float(cdf) == pytest.approx(p, abs=1e-10), (p, df)


def _simulate(n, shift, trials, seed, **kwargs):
    rng = random.Random(seed)
    out = []
    for _ in range(trials):
        a = [rng.gauss(shift, 1.0) for _ in range(n)]
        b = [rng.gauss(0.0, 1.0) for _ in range(n)]
        out.append((a, b, compare(a, b, **kwargs)))
    return out


@pytest.mark.parametrize("n", [3, 5])
def test_equal_means_false_holds_at_most_5_percent_and_interval_covers_95_percent(n):
    runs = _simulate(n, shift=0.0, trials=4000, seed=n)
    false_holds = sum(e.verdict == "holds" for _, _, e in runs) / len(runs)
    assert 0.005 < false_holds <= 0.05  # one side of a two-sided 95% interval: about 2.5%
    coverage = sum(e.low < 0.0 < e.high for _, _, e in runs) / len(runs)
    assert 0.93 <= coverage <= 0.97
    # The same intervals built on the normal quantile 1.96 are far too narrow with this few seeds.
    z = statistics.NormalDist().inv_cdf(0.975)
    normal = sum(abs(e.estimate) < z * math.sqrt((statistics.variance(a) + statistics.variance(b)) / n)
                 for a, b, e in runs) / len(runs)
    assert normal < (0.91 if n == 3 else 0.935)


def test_a_true_difference_of_two_sd_is_found_at_five_seeds():
    runs = _simulate(5, shift=2.0, trials=4000, seed=11)
    verdicts = [e.verdict for _, _, e in runs]
    assert verdicts.count("holds") / len(runs) >= 0.6  # Welch at n=5, d=2: power about 0.75
    assert verdicts.count("does not hold") / len(runs) < 0.01
    runs = _simulate(5, shift=-2.0, trials=1000, seed=12, claim="less")  # the mirror claim, for losses
    assert sum(e.verdict == "holds" for _, _, e in runs) / len(runs) >= 0.6


def test_equivalence_holds_for_identical_distributions_and_not_for_a_large_difference():
    same = [e.verdict for _, _, e in _simulate(5, shift=0.0, trials=1000, seed=21, claim="equivalent", margin=3.0)]
    assert same.count("holds") / len(same) >= 0.9
    assert same.count("does not hold") == 0
    far = [e.verdict for _, _, e in _simulate(5, shift=5.0, trials=1000, seed=22, claim="equivalent", margin=1.0)]
    assert far.count("does not hold") / len(far) >= 0.9
    assert far.count("holds") == 0


def test_welch_interval_by_hand():
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0, 6.0]
    e = compare(a, b)
    va, vb = 2.5 / 5, 4.0 / 3
    df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 2)
    half = t_quantile(0.975, df) * math.sqrt(va + vb)
    assert e.df == pytest.approx(df) and e.df == pytest.approx(3.5328, abs=1e-4)
    assert (e.estimate, e.low, e.high) == pytest.approx((-1.0, -1.0 - half, -1.0 + half))
    assert (e.n, e.sizes, e.verdict) == (3, (5, 3), "inconclusive")
    assert str(e).endswith(", 5 vs 3 seeds: inconclusive")


def test_one_sample_against_a_published_number():
    e = compare([1.0, 2.0, 3.0, 4.0, 5.0], 2.0, margin=1.0)  # mean 3, se sqrt(2.5/5), t_{0.975,4}
    half = 2.776445 * math.sqrt(0.5)
    assert (e.estimate, e.low, e.high) == pytest.approx((1.0, 1.0 - half, 1.0 + half), abs=1e-5)
    assert (e.n, e.sizes, e.df) == (5, (5,), 4.0)
    assert e.verdict == "inconclusive"  # low = -0.96 < margin 1
    assert compare([1.0, 2.0, 3.0, 4.0, 5.0], 2.0, margin=0.0).verdict == "inconclusive"
    assert compare([3.0, 3.1, 2.9, 3.05, 2.95], 2.0, margin=0.5).verdict == "holds"
    assert compare([3.0, 3.1, 2.9, 3.05, 2.95], 4.0, margin=0.0).verdict == "does not hold"


def test_paired_removes_the_seed_to_seed_variation():
    base = [-12.0, 3.0, 8.0, -5.0, 6.0]  # a large effect of the seed, shared by both methods
    tuned = [v + d for v, d in zip(base, [1.05, 0.95, 1.02, 0.98, 1.0])]
    assert compare(tuned, base).verdict == "inconclusive"  # the seeds' spread swamps the difference
    e = compare(tuned, base, paired=True, margin=0.5)
    assert e.verdict == "holds" and e.estimate == pytest.approx(1.0) and e.high - e.low < 0.2
    assert (e.n, e.sizes, e.df, e.paired) == (5, (5,), 4.0, True)
    assert str(e).endswith(", 5 paired seeds: holds")


def test_verdicts_at_the_margin():
    a = [1.0, 1.1, 0.9, 1.05, 0.95]  # mean 1, interval about [0.90, 1.10] against 0
    assert compare(a, 0.0, margin=0.8).verdict == "holds"
    assert compare(a, 0.0, margin=1.0).verdict == "inconclusive"
    assert compare(a, 0.0, margin=1.2).verdict == "does not hold"
    assert compare(a, 2.0, claim="less", margin=0.8).verdict == "holds"  # 1 is below 2 by more than 0.8
    assert compare(a, 2.0, claim="less", margin=1.0).verdict == "inconclusive"
    assert compare(a, 2.0, claim="less", margin=1.2).verdict == "does not hold"
    assert compare(a, 1.0, claim="equivalent", margin=0.2).verdict == "holds"
    assert compare(a, 0.9, claim="equivalent", margin=0.1).verdict == "inconclusive"
    assert compare(a, 0.0, claim="equivalent", margin=0.5).verdict == "does not hold"
    assert compare(a, 2.0, claim="equivalent", margin=0.5).verdict == "does not hold"
    # "less" is "greater" with the sides swapped, and a higher confidence only widens the interval
    b = [0.7, 0.8, 0.75, 0.9, 0.72]
    for margin in (0.0, 0.1, 0.2, 0.3, 0.5):
        assert compare(b, a, claim="less", margin=margin).verdict == compare(a, b, margin=margin).verdict
    wide, narrow = compare(a, b, confidence=0.99), compare(a, b, confidence=0.8)
    assert wide.low < narrow.low < narrow.high < wide.high and wide.estimate == narrow.estimate


def test_zero_variance_gives_a_point_interval():
    e = compare([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    assert (e.estimate, e.low, e.high, e.verdict) == (0.25, 0.25, 0.25, "holds")
    assert compare([0.5, 0.5, 0.5], 0.5).verdict == "inconclusive"  # a point on the margin
    assert compare([0.5, 0.5], [0.5, 0.5], paired=True, claim="equivalent", margin=0.01).verdict == "holds"


def test_str_and_format():
    loss = compare([0.21, 0.19, 0.22, 0.20, 0.18], [0.33, 0.30, 0.35, 0.31, 0.32], claim="less")
    assert str(loss) == "-0.122 [-0.148, -0.096], 5 seeds: holds"  # a loss: three decimals, no unit
    acc = compare([0.61, 0.63, 0.62, 0.64, 0.60], [0.58, 0.59, 0.60, 0.57, 0.61], unit="points", scale=100)
    assert str(acc) == "+3.0 points [+0.7, +5.3], 5 seeds: holds"
    assert acc.format(digits=2) == "+3.00 points [+0.69, +5.31], 5 seeds: holds"
    assert acc.format(scale=1, unit="") == "+0.030 [+0.007, +0.053], 5 seeds: holds"
    assert str(compare([0.1, 0.1], [0.1, 0.1])) == "+0.000 [+0.000, +0.000], 2 seeds: inconclusive"
    assert isinstance(acc, Evidence) and (acc.claim, acc.margin, acc.confidence) == ("greater", 0.0, 0.95)
    with pytest.raises(AttributeError):
        acc.verdict = "holds"  # frozen


@pytest.mark.parametrize("kwargs, match", [
    (dict(a=[1.0], b=[1.0, 2.0]), r"^a must have at least 2 values"),
    (dict(a=3.0, b=[1.0, 2.0]), r"^a must be a sequence"),
    (dict(a=["x", "y"], b=[1.0, 2.0]), r"^a must be a sequence"),
    (dict(a=[1.0, math.nan], b=[1.0, 2.0]), r"^a must contain only finite numbers"),
    (dict(a=[1.0, math.inf], b=[1.0, 2.0]), r"^a must contain only finite numbers"),
    (dict(a=[1.0, 2.0], b=[1.0]), r"^b must have at least 2 values"),
    (dict(a=[1.0, 2.0], b=[1.0, -math.inf]), r"^b must contain only finite numbers"),
    (dict(a=[1.0, 2.0], b=math.nan), r"^b must be per-seed values or a finite number"),
    (dict(a=[1.0, 2.0], b=None), r"^b must be per-seed values or a finite number"),
    (dict(a=[1.0, 2.0], b=0.0, margin=-0.1), r"^margin must be a finite number >= 0"),
    (dict(a=[1.0, 2.0], b=0.0, margin=math.nan), r"^margin must be a finite number >= 0"),
    (dict(a=[1.0, 2.0], b=0.0, claim="equivalent"), r"^margin must be > 0 for claim='equivalent'"),
    (dict(a=[1.0, 2.0], b=0.0, claim="better"), r"^claim must be one of 'greater', 'less', 'equivalent'"),
    (dict(a=[1.0, 2.0], b=0.0, confidence=0.0), r"^confidence must lie strictly between 0 and 1"),
    (dict(a=[1.0, 2.0], b=0.0, confidence=1.0), r"^confidence must lie strictly between 0 and 1"),
    (dict(a=[1.0, 2.0], b=0.0, confidence=95), r"^confidence must lie strictly between 0 and 1"),
    (dict(a=[1.0, 2.0], b=[1.0, 2.0, 3.0], paired=True), r"^paired=True needs b .* same length as a \(2\), got 3"),
    (dict(a=[1.0, 2.0], b=1.0, paired=True), r"^paired=True needs b .* got a number"),
    # the options are checked before the data: a bad claim is named even when a is bad too
    (dict(a=[math.nan], b=[1.0], claim="more"), r"^claim must be one of"),
])
def test_bad_input_names_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compare(kwargs.pop("a"), kwargs.pop("b"), **kwargs)


def test_t_quantile_bad_input():
    with pytest.raises(ValueError, match="^p must lie strictly between 0 and 1"):
        t_quantile(1.0, 4)
    with pytest.raises(ValueError, match="^df must be > 0"):
        t_quantile(0.975, 0)


def test_exact_verdicts_follow_the_declared_margin():
    from peftlab.evidence import exact
    assert exact(3.0, 1.0, claim="greater", margin=1.0).verdict == "holds"
    assert exact(1.5, 1.0, claim="greater", margin=1.0).verdict == "does not hold"
    assert exact(2.0, 1.0, claim="greater", margin=1.0).verdict == "inconclusive"  # at the margin itself
    assert exact(1.0, 3.0, claim="less", margin=1.0).verdict == "holds"
    assert exact(1.0, 1.2, claim="equivalent", margin=0.1).verdict == "does not hold"
    e = exact(16.0, 16.0, claim="equivalent", margin=0.5)
    assert (e.verdict, e.estimate, e.low, e.high) == ("holds", 0.0, 0.0, 0.0)
    assert str(e).endswith("exact (deterministic): holds")


@pytest.mark.parametrize("kwargs, match", [
    ({"value": float("nan")}, "value must be a finite number"), ({"value": 1.0, "reference": "2"}, "reference"),
    ({"value": 1.0, "margin": -1.0}, "margin must be >= 0"), ({"value": 1.0, "claim": "bigger"}, "claim must be"),
    ({"value": 1.0, "claim": "equivalent", "margin": 0.0}, "margin must be"),
])
def test_exact_bad_input(kwargs, match):
    from peftlab.evidence import exact
    with pytest.raises(ValueError, match=match):
        exact(**kwargs)
