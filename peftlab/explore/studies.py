"""Drawing a study's results (`peftlab.studies`) in a notebook: the learning-rate sweep, the curves with
their bands over seeds, the final table, and the claim check with every verdict from `evidence.compare`.
"""

from __future__ import annotations

from collections.abc import Sequence

from IPython.display import Markdown

from .. import evidence, studies
from .report import table

FORMATS = {"answer_loss": {"unit": "nats"}, "exact_match": {"scale": 100, "unit": "points"}}
LABELS = {"answer_loss": "answer loss (nats)", "exact_match": "exact match"}


def claim_evidence(claim: dict) -> evidence.Evidence:
    """`evidence.compare` on a stored claim's per-seed values, with its declared kind and margin; the
    verdict must be the one stored with the results (else the file and the code disagree).

    >>> e = claim_evidence({"a_values": [1.0, 1.1, 0.9], "b_values": [2.0, 2.1, 1.9], "kind": "less",
    ...                     "margin": 0.1, "metric": "answer_loss", "verdict": "holds"})
    >>> str(e)
    '-1.00 nats [-1.23, -0.77], 3 seeds: holds'
    """
    e = evidence.compare(claim["a_values"], claim["b_values"], claim=claim["kind"], margin=claim["margin"],
                         paired=claim.get("paired", False), **FORMATS.get(claim["metric"], {}))
    if e.verdict != claim["verdict"]:
        raise ValueError(f"claim {claim.get('id')!r}: compare gives {e.verdict!r}, the results file says "
                         f"{claim['verdict']!r}; rerun the study")
    return e


def claim_table(results: dict) -> Markdown:
    """short answer / the source's figure / measured here (estimate, interval, seeds) / verdict. The words
    come from the study as declared now (a corrected citation needs no rerun), the numbers from the results."""
    words = {c.id: c for c in studies.get(results["id"]).claims}
    rows = []
    for c in results["claims"]:
        e = claim_evidence(c)
        note = " (no plateau within the budget)" if c.get("budget_note") else ""
        rows.append((words[c["id"]].statement, words[c["id"]].source, f"{c['a']} − {c['b']}: {e.format()}{note}",
                     e.verdict))
    return table(rows, ["short answer", "source", "measured here", "verdict"])


def final_table(results: dict, labels: Sequence[str] | None = None) -> Markdown:
    """Per method: the chosen learning rate, where the plateau was reached, and each final metric as the
    mean over seeds with its 95% interval."""
    runs = results["runs"]
    labels = list(runs) if labels is None else list(labels)
    finals = list(runs[labels[0]]["seeds"][0]["final"])
    rows = []
    for m in labels:
        r = runs[m]
        cells = []
        for f in finals:
            e = evidence.compare([s["final"][f] for s in r["seeds"]], 0.0)  # the mean and its 95% interval
            scale = FORMATS.get(f, {}).get("scale", 1)
            digits = 3 if scale == 1 else 1
            cells.append(f"{e.estimate * scale:.{digits}f} [{e.low * scale:.{digits}f}, {e.high * scale:.{digits}f}]")
        plateau = "not within the budget" if r["plateau_step"] is None else f"step {r['plateau_step']}"
        rows.append((m, f"{r['lr']:g}", f"{r['steps']}", plateau, *cells))
    return table(rows, ["method", "lr (chosen on val)", "steps", "val plateau", *(f"test {LABELS.get(f, f)}, "
                                                                                  f"mean [95% CI]" for f in finals)])


def plot_sweep(ax, results: dict, labels: Sequence[str] | None = None) -> None:
    """The learning-rate sweep: validation metric against learning rate (log), one line per method,
    each seed a dot, the chosen rate circled."""
    sweep = results["sweep"]
    labels = list(sweep) if labels is None else list(labels)
    for i, m in enumerate(labels):
        s, colour = sweep[m], f"C{i}"
        lrs = [g["lr"] for g in s["grid"]]
        ax.plot(lrs, [g["mean"] for g in s["grid"]], "-", color=colour, label=m)
        for g in s["grid"]:
            ax.plot([g["lr"]] * len(g["val"]), g["val"], ".", color=colour, alpha=0.5)
        best = next(g for g in s["grid"] if g["lr"] == s["best_lr"])
        ax.plot([best["lr"]], [best["mean"]], "o", ms=10, mfc="none", color=colour)
    metric = sweep[labels[0]]["metric"]
    ax.set_xscale("log")
    ax.set(xlabel="learning rate (log)", ylabel=f"val {LABELS.get(metric, metric)}",
           title=f"sweep: {sweep[labels[0]]['steps']} steps, seeds {sweep[labels[0]]['seeds']}; circle = chosen")
    ax.legend(fontsize=7)


def plot_bands(ax, results: dict, labels: Sequence[str] | None = None, metric: str = "answer_loss",
               split: str = "test") -> None:
    """Each method's curve: the mean over seeds with its 95% interval (band), and the step where the
    validation metric plateaued (dotted line)."""
    runs = results["runs"]
    labels = list(runs) if labels is None else list(labels)
    for i, m in enumerate(labels):
        b, colour = studies.band(results, m, metric, split), f"C{i}"
        ax.plot(b.step, b.mean, "-", color=colour, label=f"{m} (lr {runs[m]['lr']:g})")
        ax.fill_between(b.step, b.low, b.high, color=colour, alpha=0.25)
        if runs[m]["plateau_step"] is not None:
            ax.axvline(runs[m]["plateau_step"], color=colour, ls=":", lw=1)
    ax.set(xlabel="step", ylabel=f"{split} {LABELS.get(metric, metric)}",
           title=f"mean over {b.n} seeds, 95% band; dotted: val plateau")
    ax.legend(fontsize=7)
