# %% [markdown]
# # 01 · What is full fine-tuning, and what does it cost?
#
# **The interview question.** *"What is full fine-tuning? Why is it expensive, and what can go wrong?"*
#
# **The short answer an interviewer expects**
# - Every weight of the pretrained model is updated on the new task's data.
# - Memory: besides the weights you store a gradient and the optimizer's state for 100% of the parameters
#   (Adam keeps two extra numbers per parameter), so training needs several times the memory of inference.
# - Risk: *catastrophic forgetting*: the model gets better at the new task and worse at what it knew.
#
# ## The precise answer
#
# Full fine-tuning continues gradient descent from the pretrained weights $\theta_0$ on a task loss,
# usually the next-token cross-entropy on the task's examples, often only on the response tokens:
# $\theta \leftarrow \theta - \eta\,\mathrm{AdamW}(\nabla_\theta \mathcal{L})$ for *all* of $\theta$.
#
# What the short answer leaves out is that the bill has four parts, and only three of them scale with
# the number of parameters $N$:
#
# | category | fp32 training with Adam | mixed precision with Adam (ZeRO, Rajbhandari et al. 2019, arXiv 1910.02054) |
# |---|---|---|
# | weights | 4 B × N | 2 B × N (fp16 copy) |
# | gradients | 4 B × N | 2 B × N |
# | optimizer state | 8 B × N (two moments) | 12 B × N (fp32 master weights + two moments) |
# | **sum** | **16 B × N** | **16 B × N** |
# | activations | grow with batch × sequence length × depth | same, in 16-bit |
#
# Mixed precision does not shrink the per-parameter bill: it moves bytes from the weights into the
# optimizer, which keeps fp32 master weights. The ZeRO paper's example: GPT-2 with 1.5B parameters has 3 GB
# of fp16 weights but needs at least 24 GB to train with Adam. Activations are the fourth part; they depend
# on the batch, not on $N$ alone (notebook 14 measures where they take over).
#
# Below we fine-tune peftlab's own pretrained model, measure each category from the tensors themselves,
# and take a first look at forgetting.

# %%
import re
import torch
import matplotlib.pyplot as plt
import peftlab
from peftlab import data, load_base, count_parameters, memory_report, scale, studies
from peftlab.evaluate import complete, greedy_accuracy
from peftlab.evidence import exact
from peftlab.measure import forward_fn, time_ratios, train_step_fn
from peftlab.explore.plots import stacked_bars
from peftlab.explore.report import table, claim_check, mib
from peftlab.explore.studies import (at_step_table, claim_table, describe, final_table, plot_bands, plot_sweep,
                                     plot_sweep_tradeoff)

torch.manual_seed(0)
GPU = scale.gpu()  # PEFTLAB_SCALE=gpu opts in to the larger setting; unset: CPU, on any machine
device = "cuda" if GPU else "cpu"

model = load_base(device=device)
n = count_parameters(model)
print(f"base model: {n.total:,} parameters, {n.trainable:,} trainable ({n.percent:.0f}%)")
print(model.config)

# %% [markdown]
# ## The experiment: fine-tune every weight on natural language → SQL
#
# The base model was pre-trained on a generated corpus of facts and stories (notebook 10 shows it). It has never
# seen SQL. We fine-tune *all* of its weights on pairs like the one below, with the loss on the SQL only, and
# measure two things on the same runs:
#
# - **the new task**: the loss on held-out SQL, and how many held-out queries come out exactly right;
# - **old knowledge**: the 480 facts of pre-training ("Tevel lives in" → " Ostrel"), measured two ways. *Facts
#   completed*: greedy completion gives the value. *Facts ranked first*: among every value of that attribute (12 to
#   16 candidates), the true one has the highest log-likelihood. A fact ranked first but no longer completed is still
#   in the model; its output has been taken over by the new task. A fact no longer ranked first is lost.

# %%
sql = data.sql_task()
facts = studies.fact_splits()  # the 480 facts, 240 val and 240 test
print(f"SQL pairs: {len(sql['train'])} train / {len(sql['val'])} val / {len(sql['test'])} test (all the task has)")
print(f"facts of pre-training: {len(facts['val'])} val / {len(facts['test'])} test")
print(repr(sql["train"][0].prompt + sql["train"][0].response))

# %% [markdown]
# ## The study: learning and forgetting across learning rates
#
# How much full fine-tuning forgets depends on how far the weights move, so one learning rate tells little. Declared
# in `peftlab/studies/full_forgetting.py` and run once by `python -m peftlab.studies run 01_full` (the results ship
# with peftlab): full fine-tuning swept over six learning rates, 1e-5 to 3e-3, for 100 steps with two seeds each,
# the rate chosen on validation SQL loss; the facts are measured at the end of every sweep run but never used for
# the choice. Then five seeds train 200 steps at the chosen rate ("full") and at a gentler rate fixed before the
# run, 3e-5 ("gentle").

# %%
results = studies.load_results("01_full")  # refuses a file whose config or base model differs from today's
print(describe(results))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4))
plot_sweep(ax1, results, ["full"])
plot_sweep_tradeoff(ax2, results, "fact_rank", ["full"])
plt.tight_layout()
plt.show()
grid = results["sweep"]["full"]["grid"]
display(table([(f"{g['lr']:g}", f"{g['mean']:.3f}", *(f"{sum(g['also'][f]) / len(g['also'][f]):.1%}"
                                                      for f in ("fact_rank", "fact_match"))) for g in grid],
              ["learning rate", "val SQL loss (nats)", "facts ranked first", "facts completed"]))
base_facts = {f: results["runs"]["full"]["seeds"][0]["curve"]["test"][f][0] for f in ("fact_rank", "fact_match")}
print("after 100 steps, mean of 2 seeds; val facts. The base model on the test facts: "
      f"{base_facts['fact_rank']:.1%} ranked first, {base_facts['fact_match']:.1%} completed")

# %% [markdown]
# The left panel is the sweep the rate comes from (validation SQL loss after 100 steps, mean of two seeds, the
# chosen rate circled); the right panel and the table put the facts next to it. The sweep chooses 1e-3 (0.110 nats),
# inside the grid but only just ahead of 3e-4 (0.112): on the new task the two are tied. On the facts they are far
# apart, and forgetting grows with every step up the grid, from 87.7% of the validation facts ranked first at 1e-5
# to 7.5% at 3e-3, against 95.4% (test facts) for the base model. The two fact measures tell what kind of
# forgetting it is. At 3e-4, 61.3% of the facts are still ranked first but only 39.0% are completed: for about a
# third of the facts the model still holds, the greedy answer has been taken over by the new task. At 1e-3 the two
# measures are 18.5% and 3.1%: most facts are not hidden but lost. The gentlest rate, 1e-5, keeps them and learns
# almost no SQL (2.61 nats).

# %%
fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
for ax, metric in zip(axes, ("answer_loss", "exact_match", "fact_rank", "fact_match")):
    plot_bands(ax, results, metric=metric)
    ax.set_title(ax.get_title(), fontsize=8)
    if metric != "answer_loss":
        ax.set_ylim(0, 1)
axes[0].set_yscale("log")
plt.tight_layout()
plt.show()
for step in (50, 100):
    display(at_step_table(results, step, ("answer_loss", "exact_match", "fact_rank", "fact_match")))
display(final_table(results))

# %% [markdown]
# Five seeds at each rate for 200 steps (the bands are 95% intervals of the mean over seeds). Exact match does move
# with enough training: at the chosen rate about 1% of the queries are exact at steps 50 and 100 (0.8% and 1.0%,
# means of five seeds) and 22.6% after 200 steps [9.8, 35.3] (the final table; the seeds are far apart), while the
# facts have fallen to
# 12.5% ranked first and 2.3% completed. At 3e-5 the facts hold at 88.4% ranked first, and the SQL loss stops at
# 0.185 nats against 0.076, with almost no exact query (0.3%). Neither set-up met the plateau rule within the 200
# steps, so the verdicts below are about that budget. Most of the forgetting at 1e-3 happens in the first 50 steps
# (the step-50 table): the facts drop long before the queries come out right.
#
# ## A live run, checked against the study
#
# One point of the study, trained here by the study's own code: full fine-tuning at the chosen rate, seed 0, for
# the first 50 steps. Its held-out SQL loss must land inside the band where one more seed's run is expected (the
# study's 95% prediction interval at step 50). Its numbers vary a little from machine to machine, so nbval does not
# compare them; the cell after checks the band. The base model's fact scores are read from the study's step 0 (the
# same computation on the same weights).

# %%
LIVE_STEPS = 50


def sql_scores(m):
    """Held-out SQL loss; exact queries; queries right up to the quoted values; facts ranked and completed."""
    got = [p.split("\n")[0] for p in complete(m, [e.prompt for e in sql["test"]], 64)]
    want = [e.response.strip() for e in sql["test"]]
    shape = lambda q: re.sub(r"'[^']*'", "'?'", q)
    return {"SQL loss (nats)": studies.answer_loss(m, sql["test"]),
            "SQL exact match": sum(g == w for g, w in zip(got, want)) / len(want),
            "SQL right shape": sum(shape(g) == shape(w) for g, w in zip(got, want)) / len(want),
            "facts ranked first": studies.fact_rank(m, facts["test"]),
            "facts completed": greedy_accuracy(m, facts["test"])}


tuned, live = studies.live_run(results, "full", LIVE_STEPS, model, seed=0)  # the study's own training code
after = sql_scores(tuned)
before = {"SQL loss (nats)": results["runs"]["full"]["seeds"][0]["curve"]["test"]["answer_loss"][0],
          "SQL exact match": results["runs"]["full"]["seeds"][0]["curve"]["test"]["exact_match"][0],
          "SQL right shape": None, "facts ranked first": base_facts["fact_rank"],
          "facts completed": base_facts["fact_match"]}

# %% tags=["nbval-ignore-output"]
fmt = lambda k, v: "—" if v is None else (f"{v:.3f}" if "loss" in k else f"{v:.1%}")
display(table([(k, fmt(k, before[k]), fmt(k, after[k])) for k in after],
              ["metric", "base", f"after {LIVE_STEPS} steps at lr {results['runs']['full']['lr']:g}"]))
for example in sql["test"][:3]:
    print(example.prompt + complete(tuned, [example.prompt], 64)[0].split("\n")[0])

# %%
print(studies.require_inside(results, "full", LIVE_STEPS, live))

# %% [markdown]
# The live run lands inside the study's band (the check above). Its table shows the same order of events as the
# study's curves: after 50 steps more than half of the queries already have the right shape and none or almost none
# is exact,
# while the facts have fallen to about a quarter ranked first. The completions show why the queries are not exact
# yet: the model writes a name and a value of the right kind, not the ones in the question.

# %% [markdown]
# ## Measure: memory by category, against the 16-bytes-per-parameter rule
#
# `memory_report` runs one real training step and counts bytes from the tensors: every parameter, every
# `.grad`, every optimizer state tensor, and every tensor autograd saved for the backward pass (each storage once).
# That is an *accounting*; with `profile=True` it also measures the step's peak from the allocator's own events
# (`torch.profiler`), here on a step after the first, when Adam's state already exists.

# %%
batch = torch.randint(0, 256, (8, 128), generator=torch.Generator().manual_seed(0))
fresh = load_base(device=device)
r = memory_report(fresh, batch, step="later", profile=True)
rows = [(cat, f"{getattr(r, cat):,}", mib(getattr(r, cat)), f"{getattr(r, cat) / n.total:.2f}")
        for cat in ("weights", "gradients", "optimizer", "activations")]
rows.append(("accounted total", f"{r.total:,}", mib(r.total), f"{r.total / n.total:.2f}"))
rows.append((f"measured peak ({r.peak_phase})", f"{r.peak:,}", mib(r.peak), f"{r.peak / n.total:.2f}"))
display(table(rows, ["category", "bytes", "MiB", "bytes / parameter"]))
print("live at the peak: " + ", ".join(f"{k} {mib(v)}" for k, v in r.at_peak.items() if v))
per_param = (r.weights + r.gradients + r.optimizer) / n.total
print(f"weights + gradients + optimizer = {per_param:.2f} bytes per parameter "
      f"(+ {r.optimizer_step_counters} B of Adam step counters, one per tensor)")

# %% [markdown]
# The measured peak is below the accounted total: the four categories never all coexist (the activations are
# freed during backward as the gradients appear). Memory against batch size, accounted bars and the measured peak:

# %%
by_batch = {b: memory_report(load_base(device=device), torch.randint(0, 256, (b, 128), generator=torch.Generator().manual_seed(b)),
                             step="later", profile="peak") for b in (1, 4, 16)}
fig, ax = plt.subplots(figsize=(5, 3.5))
stacked_bars(ax, [x.as_dict() for x in by_batch.values()], [f"batch {b} × 128" for b in by_batch])
ax.plot(range(len(by_batch)), [x.peak / 2**20 for x in by_batch.values()], "k_", ms=30, mew=2, label="measured peak")
ax.set_title("Full fine-tuning steps, fp32 + AdamW"); ax.legend(fontsize=8)
plt.show()
for b, x in by_batch.items():
    print(f"batch {b:>2} x 128: accounted {mib(x.total)}, measured peak {mib(x.peak)} (in {x.peak_phase})")

# %% [markdown]
# The weights are a quarter of the parameter-proportional bill; gradients another quarter; Adam's two
# moments half. As the batch grows the activations take over: they scale with batch × sequence length,
# while the other three do not.
#
# These are fp32 numbers: 4 + 4 + 8 bytes per parameter. ZeRO's "16 bytes" (Rajbhandari et al. 2019) is the same
# total split differently, for its mixed-precision Adam: 2 (fp16 weights) + 2 (fp16 gradients) + 12 (fp32 master
# weights and two moments). PyTorch's autocast, which peftlab uses for bf16, keeps fp32 weights and gradients, so
# its split stays 4 + 4 + 8 (notebook 16). ZeRO's §3.1 works the same arithmetic for GPT-2 1.5B: 16 B × 1.5B = 24 GB
# of model states alone.
#
# Step time, as a ratio: a training step against a forward pass of the same batch, timed in alternation (the
# median of the per-round ratios, with its interquartile range). A step is about 6N FLOPs per token against the
# forward's 2N, so the ratio should be near 3; an absolute time would depend on how busy the machine is.

# %% tags=["nbval-ignore-output"]
timing = time_ratios({"forward": forward_fn(load_base(device=device), batch),
                      "training step": train_step_fn(load_base(device=device), batch)}, "forward", rounds=7, warmup=1)
print(f"training step / forward pass, batch 8 x 128: {timing['training step']}")

# %% [markdown]
# ## Claim check
#
# The study's claims, each with the margin declared before the run: for "full" against the base model, the mean of
# five seeds against the base model's own value (which does not vary by seed) with its 95% one-sample interval; for
# "gentle" against "full", the difference of the means with its 95% Welch interval; the verdict is what
# `peftlab.evidence.compare` reads off it. Below them, the bytes per parameter, facts of the accounting that do not
# vary with a seed, weighed by `peftlab.evidence.exact`.

# %%
display(claim_table(results))
display(claim_check([
    ("optimizer state for 100% of parameters", "Adam: 2 states per parameter (8 B in fp32)",
     f"optimizer = {r.optimizer / n.total:.2f} B/param; 8 ± 0.01", exact(r.optimizer / n.total, 8.0, claim="equivalent", margin=0.01).verdict),
    ("~16 B/param before activations", "ZeRO: 2 + 2 + 12 = 16 B/param (mixed precision)",
     f"fp32: 4 + 4 + 8 = {per_param:.2f} B/param; 16 ± 0.01", exact(per_param, 16.0, claim="equivalent", margin=0.01).verdict),
]))

# %% [markdown]
# All four verdicts hold, far outside their margins: at the rate the new task prefers, full fine-tuning forgets most
# of what it read in pre-training within 200 steps, and a 33 times gentler rate keeps most of it but learns less SQL
# in the same steps. Forgetting is a trade-off along the learning rate, not a fixed property of the method; whether a
# parameter-efficient method does better at the *same* new-task quality is notebook 08's question (Biderman et al.
# 2024, arXiv 2405.09673).
#
# ## Explore: batch, sequence length and precision against memory
#
# Each change of a control runs one real training step on a fresh copy of the base model and adds a bar.
# Watch which part grows with the batch and which does not; switch on gradient checkpointing and watch the
# activations shrink (notebook 15 measures its cost in time).

# %% [markdown]
# ![The explorer below as it first appears, at its default settings](figures/01_explorer.png)
#
# *The explorer below as it first appears, photographed in JupyterLab by `scripts/explorer_pictures.py`; run
# the cell for the live one.*

# %% tags=["explorer", "nbval-ignore-output"]
from peftlab.explore.memory import MemoryExplorer
MemoryExplorer(load_base(device=device)).show()

# %% [markdown]
# ## Takeaways for the interview
#
# - Full fine-tuning updates every parameter; with Adam it costs **16 bytes per parameter** before activations,
#   in fp32 *and* in standard mixed precision. Measured here: exactly 16.00.
# - Activations are the part that grows with batch and sequence length, and they are often the largest.
# - It can forget what pre-training taught; how much depends on the learning rate and the steps, not only on the
#   method. Measured here: at the SQL task's best rate (1e-3), 200 steps leave 12.5% of the facts ranked first
#   (95.4% before); at 3e-5, 88.4%, with a higher SQL loss.
#
# **Follow-up questions to expect**
# - *Where do the 12 bytes of mixed-precision optimizer state come from?* fp32 master weights (4) plus two fp32 moments (8).
# - *How would you fit a 7B model on one 24 GB GPU?* Not with full fine-tuning in mixed precision (7B × 16 B = 112 GB):
#   shard states (ZeRO), offload, or train fewer parameters (LoRA, notebook 03) on a quantized base (QLoRA, notebook 05).
# - *How do you detect forgetting?* Keep an evaluation of the old capabilities next to the new task's, as in the table above.
