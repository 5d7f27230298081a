"""Drawing a study's results (`peftlab.studies`) in a notebook: the learning-rate sweep, the curves with
their bands over seeds, the final table, and the claim check with every verdict from `evidence.compare`.
"""

from __future__ import annotations

from collections.abc import Sequence

from IPython.display import Markdown

from .. import evidence, studies
from .report import table

FORMATS = {"answer_loss": {"unit": "nats"}, "exact_match": {"scale": 100, "unit": "points"}, "loss": {"unit": "nats"},
           "rc_loss": {"unit": "nats"}, "fact_rank": {"scale": 100, "unit": "points"},
           "fact_match": {"scale": 100, "unit": "points"}, "stranger_match": {"scale": 100, "unit": "points"},
           "sql_loss": {"unit": "nats"}, "python_loss": {"unit": "nats"}, "pair_loss": {"unit": "nats"},
           "python_match": {"scale": 100, "unit": "points"}, "format_ok": {"scale": 100, "unit": "points"},
           "wording_match": {"scale": 100, "unit": "points"}, "family_match": {"scale": 100, "unit": "points"},
           "facts_match": {"scale": 100, "unit": "points"}}
LABELS = {"answer_loss": "answer loss (nats)", "exact_match": "exact match", "loss": "loss (nats per byte)",
          "rc_loss": "reverse-complement loss (nats)", "fact_rank": "facts ranked first",
          "fact_match": "facts completed (greedy)", "stranger_match": "strangers' questions answered",
          "sql_loss": "SQL answer loss (nats)", "python_loss": "Python answer loss (nats)",
          "pair_loss": "mean of the SQL and Python losses (nats)", "python_match": "Python answers exactly right",
          "format_ok": "answers in their family's form", "wording_match": "exact match, new wordings",
          "family_match": "exact match, new tasks", "facts_match": "exact match, held-out facts"}


def describe(results: dict) -> str:
    """The lines a notebook prints above its study: id, seeds, evaluation sets, status, run time, the budget
    rule, and each method with its options and the learning rates it swept."""
    study = studies.get(results["id"])
    sizes = results["eval_sizes"]
    lines = [f"{study.id}: {len(study.seeds)} seeds, eval sets {sizes['val']} val / {sizes['test']} test items, "
             f"status {studies.status(study)}, {results['wall_time_s'] / 60:.0f} min on {results['threads']} "
             f"{results['device']} threads", f"budget: {results['budget_rule']}"]
    width = max(len(m.label) for m in study.methods)
    for m in study.methods:
        lines.append(f"  {m.label:{width}} {m.name:7} {dict(m.options)}  lrs {m.lrs}"
                     + (f"  trained on the first {m.n_train} examples" if m.n_train else ""))
    return "\n".join(lines)

def claim_evidence(claim: dict) -> evidence.Evidence:
    """`evidence.compare` on a stored claim's per-seed values, with its declared kind and margin; the
    verdict must be the one stored with the results (else the file and the code disagree).

    >>> e = claim_evidence({"a_values": [1.0, 1.1, 0.9], "b_values": [2.0, 2.1, 1.9], "kind": "less",
    ...                     "margin": 0.1, "metric": "answer_loss", "verdict": "holds"})
    >>> str(e)
    '-1.00 nats [-1.23, -0.77], 3 seeds: holds'
    """
    e = evidence.compare(claim["a_values"], claim["b_values"], claim=claim["kind"], margin=claim["margin"],
                         paired=claim.get("paired", False),
                         **({"unit": "rates", "digits": 1} if claim.get("on") == "sweep_width"
                            else FORMATS.get(claim["metric"], {})))
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
        if c.get("reason"):  # no interval: a run never reached the matched level, or diverged
            rows.append((words[c["id"]].statement, words[c["id"]].source, f"{c['a']} − {c['b']}: {c['reason']}",
                         c["verdict"]))
            continue
        e = claim_evidence(c)
        if c.get("on") == "matched":
            note = f" (where val {results['sweep'][c['a']]['metric']} first reaches {c['success']:g})"
        elif c.get("on", "final") == "sweep_width":
            note = (f" (rates reaching {c['success']:g} within {results['sweep'][c['a']]['steps']} steps, of "
                    f"{len(results['sweep'][c['a']]['grid'])}, per seed)")
        else:
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


def _mean_ci(values: Sequence[float], metric: str) -> str:
    e = evidence.compare(list(values), 0.0)  # the mean and its 95% interval
    scale = FORMATS.get(metric, {}).get("scale", 1)
    digits = 3 if scale == 1 else 1
    return f"{e.estimate * scale:.{digits}f} [{e.low * scale:.{digits}f}, {e.high * scale:.{digits}f}]"


def combo_table(results: dict, runs: Sequence[str] = ()) -> Markdown:
    """Per `Combo` (and first the trained methods `runs`, for reference): how it was joined and each final
    metric as the mean over seeds with its 95% interval."""
    rows = [(m, "trained", "", *(_mean_ci([s["final"][f] for s in results["runs"][m]["seeds"]], f)
                                 for f in results["runs"][m]["seeds"][0]["final"])) for m in runs]
    for label, c in results["combos"].items():
        spec = c["combo"]
        how = spec["kind"] + "".join(f", {k} {v}" for k, v in (("density", spec["density"]), ("rank", spec["rank"]))
                                     if v is not None)
        weights = ", ".join(f"{k} {w:g}" for k, w in spec["weights"].items()) or "none"
        finals = c["seeds"][0]["final"]
        rows.append((label, how, weights, *(_mean_ci([s["final"][f] for s in c["seeds"]], f) for f in finals)))
    finals = next(iter(results["combos"].values()))["seeds"][0]["final"]
    return table(rows, ["model", "joined by", "weights", *(f"test {LABELS.get(f, f)}, mean [95% CI]"
                                                           for f in finals)])


def plot_weight_sweep(ax, results: dict, metric: str) -> None:
    """The weight sweep: `metric` against t, weights (1 - t, t) over the study's pair, one line per kind, the
    mean over seeds with its 95% interval as a band."""
    for i, (kind, sweep) in enumerate(results["weight_sweep"].items()):
        ts = sweep["t"]
        es = [evidence.compare([s[metric][j] for s in sweep["seeds"]], 0.0) for j in range(len(ts))]
        ax.plot(ts, [e.estimate for e in es], "o-", color=f"C{i}", label=kind, ms=3)
        ax.fill_between(ts, [e.low for e in es], [e.high for e in es], color=f"C{i}", alpha=0.2)
    a, b = next(iter(results["weight_sweep"].values()))["pair"]
    ax.set(xlabel=f"t: weights ({a} 1 - t, {b} t)", ylabel=LABELS.get(metric, metric))
    ax.legend(fontsize=8)


def plot_sweep(ax, results: dict, labels: Sequence[str] | None = None, success: float | None = None) -> None:
    """The learning-rate sweep: validation metric against learning rate (log), one line per method,
    each seed a dot, the chosen rate circled; `success`, a claim's threshold, as a dashed line."""
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
    if success is not None:
        ax.axhline(success, color="gray", ls="--", lw=1, label=f"trains: at or below {success:g}")
    metric = sweep[labels[0]]["metric"]
    ax.set_xscale("log")
    ax.set(xlabel="learning rate (log)", ylabel=f"val {LABELS.get(metric, metric)}",
           title=f"sweep: {sweep[labels[0]]['steps']} steps, seeds {sweep[labels[0]]['seeds']}; circle = chosen")
    ax.legend(fontsize=7)


def width_table(results: dict, success: float, labels: Sequence[str] | None = None) -> Markdown:
    """Per method: which swept rates reached `success` on the validation metric, per seed, and how many."""
    sweep = results["sweep"]
    labels = list(sweep) if labels is None else list(labels)
    rows = []
    for m in labels:
        s = sweep[m]
        counts = studies.sweep_width(sweep, m, success)
        better = (lambda v: v <= success) if studies.METRICS[s["metric"]][1] == "min" else (lambda v: v >= success)
        marks = [" ".join("x" if v is not None and better(v) else "." for v in per_seed)
                 for per_seed in zip(*(g["val"] for g in s["grid"]))]
        rows.append((m, " / ".join(marks), " / ".join(map(str, counts)), f"{sum(counts) / len(counts):.1f}"))
    lrs = " ".join(f"{g['lr']:g}" for g in sweep[labels[0]]["grid"])
    return table(rows, ["method", f"rates that train, per seed (x: trains; lrs {lrs})", "count per seed",
                        "mean count"])


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


def at_step_table(results: dict, step: int, metrics: Sequence[str] = ("answer_loss", "exact_match"),
                  split: str = "test", labels: Sequence[str] | None = None) -> Markdown:
    """Every method's curve metrics at one evaluation step: the mean over seeds with its 95% interval."""
    labels = list(results["runs"]) if labels is None else list(labels)
    rows = []
    for m in labels:
        cells = []
        for f in metrics:
            mean, low, high = studies.band(results, m, f, split).at(step)
            scale = FORMATS.get(f, {}).get("scale", 1)
            digits = 3 if scale == 1 else 1
            cells.append(f"{mean * scale:.{digits}f} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]")
        rows.append((m, *cells))
    return table(rows, ["method", *(f"{split} {LABELS.get(f, f)} at step {step}, mean [95% CI]" for f in metrics)])


def steps_view(results: dict, step: int, metric: str = "exact_match", split: str = "test"):
    """The notebook's steps slider: every method's curve with its band and a line at `step` (left), and each
    method's value at that step with its interval (right). Returns the figure."""
    import matplotlib.pyplot as plt

    labels = list(results["runs"])
    scale = FORMATS.get(metric, {}).get("scale", 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
    for i, m in enumerate(labels):
        b = studies.band(results, m, metric, split)
        ax1.plot(b.step, [v * scale for v in b.mean], color=f"C{i}", label=m)
        ax1.fill_between(b.step, [v * scale for v in b.low], [v * scale for v in b.high], color=f"C{i}", alpha=0.2)
        mean, low, high = b.at(step)
        ax2.bar(i, mean * scale, color=f"C{i}", yerr=[[(mean - low) * scale], [(high - mean) * scale]], capsize=4)
    ax1.axvline(step, color="k", ls="--", lw=1)
    ax1.set(xlabel="step", ylabel=f"{split} {LABELS.get(metric, metric)}", title=f"mean over {b.n} seeds, 95% band")
    ax1.legend(fontsize=7)
    ax2.set_xticks(range(len(labels)), labels, rotation=30)
    ax2.set(ylabel=f"{split} {LABELS.get(metric, metric)}", title=f"at step {step}")
    fig.tight_layout()
    return fig


def plot_live(ax, results: dict, method: str, step: int, value: float, *, metric: str = "answer_loss",
              seed: int = 0, colour: str = "C0") -> studies.Band:
    """A notebook's live run on its study: the band where one more seed's run should land (`band(...,
    interval="run")`, 95%) and the live run's `value` at `step`. Returns the band, for the check below it."""
    b = studies.band(results, method, metric, interval="run")
    ax.plot(b.step, b.mean, color=colour, label=f"study, {b.n} seeds")
    ax.fill_between(b.step, b.low, b.high, color=colour, alpha=0.25, label="where one run should land (95%)")
    ax.plot([step], [value], "r*", ms=12, label=f"live run, seed {seed}")
    ax.set(xlabel="step", ylabel=f"test {LABELS.get(metric, metric)}",
           title=f"{method}, lr {results['runs'][method]['lr']:g}")
    ax.legend(fontsize=8)
    return b


def plot_tradeoff(ax, results: dict, x: str, y: str, labels: Sequence[str] | None = None) -> None:
    """Learning against forgetting along training: for each method's final runs, `y` against `x` on the test
    split at every evaluation step, one thin line per seed and the mean over seeds drawn thick, from step 0
    (the base model) on."""
    runs = results["runs"]
    labels = list(runs) if labels is None else list(labels)
    sy = FORMATS.get(y, {}).get("scale", 1)
    for i, m in enumerate(labels):
        curves = [r["curve"]["test"] for r in runs[m]["seeds"]]
        for c in curves:
            ax.plot(c[x], [v * sy for v in c[y]], "-", color=f"C{i}", alpha=0.25, lw=0.8)
        mx = [sum(v) / len(v) for v in zip(*(c[x] for c in curves))]
        my = [sy * sum(v) / len(v) for v in zip(*(c[y] for c in curves))]
        ax.plot(mx, my, "o-", color=f"C{i}", ms=3, label=f"{m} (lr {runs[m]['lr']:g}), mean of {len(curves)} seeds")
    ax.set_xscale("log")
    ax.set(xlabel=f"test {LABELS.get(x, x)} (log; learned more to the left)", ylabel=f"test {LABELS.get(y, y)}",
           title="along training: step 0 at the right")
    ax.legend(fontsize=7)


def plot_sweep_tradeoff(ax, results: dict, y: str, labels: Sequence[str] | None = None) -> None:
    """Learning against forgetting over learning rates: every sweep run (one rate, one seed) as a point, the
    compared metric on val against `y` measured on val at the end of the run (`Study.sweep_metrics`), each
    rate labelled once."""
    sweep = results["sweep"]
    labels = list(sweep) if labels is None else list(labels)
    sy = FORMATS.get(y, {}).get("scale", 1)
    for i, m in enumerate(labels):
        s = sweep[m]
        for g in s["grid"]:
            ax.plot(g["val"], [v * sy for v in g["also"][y]], "o", color=f"C{i}", ms=4,
                    mfc="none" if g["lr"] != s["best_lr"] else f"C{i}")
            ax.annotate(f"{g['lr']:g}", (g["val"][0], g["also"][y][0] * sy), fontsize=6, color=f"C{i}",
                        xytext=(3, 3), textcoords="offset points")
        ax.plot([], [], "o", color=f"C{i}", label=f"{m} (filled: chosen rate)")
    metric = sweep[labels[0]]["metric"]
    ax.set_xscale("log")
    ax.set(xlabel=f"val {LABELS.get(metric, metric)} (log)", ylabel=f"val {LABELS.get(y, y)}",
           title=f"over learning rates: {sweep[labels[0]]['steps']} steps, seeds {sweep[labels[0]]['seeds']}")
    ax.legend(fontsize=7)
