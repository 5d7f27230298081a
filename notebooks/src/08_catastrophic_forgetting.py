# %% [markdown]
# # 08 · Does PEFT prevent catastrophic forgetting?
#
# **The interview question.** *"Does parameter-efficient fine-tuning such as LoRA prevent catastrophic
# forgetting?"*
#
# **The short answer an interviewer expects**
# - The base weights are frozen, so the knowledge stored in them is preserved.
# - LoRA trains a small low-rank update, so it changes the model less than full fine-tuning and forgets less.
# - Full fine-tuning overwrites pretrained weights and is prone to catastrophic forgetting.
#
# ## The precise answer
#
# *Catastrophic forgetting* (McCloskey & Cohen 1989) is the loss of earlier abilities when a network is trained
# on new data. With LoRA (Hu et al. 2021, arXiv 2106.09685) the frozen $W_0$ stays in memory unchanged, but the
# model that answers is $W_0 + \frac{\alpha}{r} BA$: every adapted layer's output moves, and with it what the model
# says about everything, old knowledge included. Freezing bounds *how far* the model can move (a rank-$r$ update
# per layer); it does not stop it moving. So the short answer is true in one narrow sense: `lora.disabled(model)`
# gives the base model back exactly. Of the *adapted* model it promises nothing.
#
# Biderman et al. (2024, "LoRA Learns Less and Forgets Less", arXiv 2405.09673) measured this on Llama-2-7B trained
# on code and math: LoRA reaches a lower accuracy on the new domain than full fine-tuning (§4.1, it *learns less*)
# and keeps more of the base model's abilities (§4.2, it *forgets less*). Plotted as forgetting against learning,
# over training durations, the two "seem to occupy the same Pareto curve" (§4.3, Fig. 4), LoRA at the learn-less,
# forget-less end: forgetting less is the price of learning less, not a free gift. They also find that full
# fine-tuning's weight updates are far from low rank: 10-100 times the ranks LoRA is usually run with (§4.5).
#
# This notebook measures the same three things on peftlab's base model, in a study with five seeds:
#
# - **new domain**: `data.dna_task()`, DNA-like "genes" built from motifs, each followed by its reverse
#   complement; no such text is in the pre-training corpus. Training sees whole sequences. Learning is measured
#   on the **reverse complement** only (`studies.rc_loss`): it is fully predictable from the gene, so its loss can
#   go towards 0, while a model that has only learned the four-letter alphabet sits at $\ln 4 = 1.386$ nats.
# - **old knowledge**: the 480 facts the base model learned in pre-training ("Tevel lives in" → " Ostrel").
#   Two measures: **ranked first** (`studies.fact_rank`): the true value is the most likely of every value its
#   attribute takes (12 to 16 candidates, chance about 7%); and **completed** (`studies.fact_match`): greedy
#   decoding writes it. The first tells a lost fact from one the model still knows but no longer says first,
#   because its output has been taken over by DNA letters.
# - **methods**: full fine-tuning, and LoRA with $r = 8$ on every linear layer (`all-linear`, $\alpha = 2r$ as in
#   Biderman et al.), each at its own learning rate.

# %%
import statistics

import matplotlib.pyplot as plt
import torch

from peftlab import data, load_base, lora, studies
from peftlab import forgetting
from peftlab.evaluate import complete
from peftlab.explore.forgetting import TradeoffExplorer
from peftlab.explore.report import table
from peftlab.explore.studies import (claim_table, describe, final_table, plot_bands, plot_live, plot_sweep,
                                     plot_sweep_tradeoff, plot_tradeoff)
from peftlab.tokenizer import ByteTokenizer
from peftlab.train import collate

torch.manual_seed(0)
device = "cpu"  # the compared outputs are CPU runs; the study itself runs anywhere (`--device cuda`)
base = load_base(device=device)
dna = data.dna_task()
facts = studies.fact_splits()
results = studies.load_results("08_forgetting")  # refuses a file whose config or base model differs from today's
# every run of the study starts from the base model, and its curve measured it at step 0: read, not recomputed
start = {m: v[0] for m, v in results["runs"]["full"]["seeds"][0]["curve"]["test"].items()}
print(f"DNA sequences: {len(dna['train'])} train / {len(dna['val'])} val / {len(dna['test'])} test; "
      f"facts: {len(facts['val'])} val / {len(facts['test'])} test")
print("example:", dna["train"][0])
print(f"base model on the test sets: reverse-complement loss {start['rc_loss']:.3f} nats, facts ranked first "
      f"{start['fact_rank']:.1%}, completed {start['fact_match']:.1%}")

# %% [markdown]
# The base model has never seen a gene: its loss on the reverse complement is far above the $\ln 4$ of a model that
# knows only the alphabet. It knows the facts, which is what we will watch.

# %%
gene = dna["val"][0]
prompt = gene[:gene.index("|") + 1]
print("prompt:        ", prompt)
print("truth:         ", gene[len(prompt):])
print("base continues:", repr(complete(base, [prompt], len(gene) - len(prompt))[0]))

# %% [markdown]
# ## The study: learning and forgetting on the same runs
#
# Declared in `peftlab/studies/learn_forget.py` and run once by `python -m peftlab.studies run 08_forgetting` (its
# results ship with peftlab). Each method sweeps five learning rates (both reach down to 1e-4) for 100 steps with
# two seeds, and its rate is chosen on the validation reverse-complement loss; the facts are measured at the end of
# every sweep run too, but never used for the choice. Then five seeds train 200 steps at that rate, probed densely
# early (steps 0, 2, 4, 6, 8, 12, 16, 24, 32, then every 50), because forgetting is fast. The claims and their
# margins were written into the study before it ran.

# %%
study = studies.get("08_forgetting")
print(describe(results))

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4))
plot_sweep(ax1, results)
ax1.axhline(1.386, color="gray", ls=":", lw=1, label="ln 4: the alphabet only")
ax1.legend(fontsize=7)
plot_sweep_tradeoff(ax2, results, "fact_rank")
plt.tight_layout()
plt.show()
display(final_table(results))

# %% [markdown]
# The left panel is the sweep the learning rates come from (validation reverse-complement loss after 100 steps, one
# dot per seed, the chosen rate circled); the right one is the same sweep runs seen as a trade-off, facts ranked
# first against that loss, each rate labelled. Full fine-tuning learns fastest at 3e-4 and LoRA at 3e-3, neither at
# an edge of its grid. Over learning rates full fine-tuning lies above LoRA at every loss both reach: at 3e-5 it is
# at about 1.0 nats with 89% of the facts, where LoRA at 3e-4 is at 1.28 nats with 83%; to learn as much as full
# fine-tuning at 1e-4 (0.5 nats) LoRA needs 3e-3, where it keeps about 13%. No run plateaued within 200 steps.

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
for ax, metric in zip(axes, ("rc_loss", "fact_rank", "fact_match")):
    plot_bands(ax, results, metric=metric)
    ax.set_xscale("symlog", linthresh=10)  # the first 32 steps are probed densely
axes[0].set_yscale("log")
plt.tight_layout()
plt.show()

# %% [markdown]
# Both methods learn the reverse complement (the left panel, on a log scale) and both forget, but at different
# speeds. LoRA's facts collapse within the first dozen steps at its rate: from 95% ranked first at step 0 to about
# 13% at step 12 on the first seed, and greedy completion (right) goes to 0% and stays near it. Full fine-tuning at
# its rate loses them slowly, about 95% to 71-78% after 200 steps. The gap between the two measures is the hijacked
# output: once greedy completion answers in DNA letters it scores 0, while the ranking still finds some facts.
#
# The picture Biderman et al. draw, one point per probe: facts ranked first against the new-domain loss, along
# training, thin lines for the seeds and the mean thick.

# %%
fig, ax = plt.subplots(figsize=(7.5, 4.2))
plot_tradeoff(ax, results, "rc_loss", "fact_rank")
ax.axvline(1.386, color="gray", ls=":", lw=1)
for level in (1.0, 0.5):
    ax.axvline(level, color="k", ls="--", lw=0.6)
plt.show()

# %% [markdown]
# ## Live runs, checked against the study
#
# Two points of the study, trained here: full fine-tuning and LoRA, seed 0, each at the rate the study chose, for
# the first 50 steps. Each must land inside the band where one more seed's run is expected (the study's 95%
# prediction interval at step 50), on the new-domain loss and on the facts ranked first. Their numbers vary a little
# from machine to machine, so nbval does not compare them; the cell after the plots checks that they fall inside the
# bands. The two trained models are kept for the rank analysis below.

# %%
LIVE_STEPS, SEED = 50, 0
live = {}
for m in ("full", "lora"):
    model, value = studies.live_run(results, m, LIVE_STEPS, base, seed=SEED)
    live[m] = {"model": model, "rc_loss": value, "fact_rank": studies.fact_rank(model, facts["test"])}

# %% tags=["nbval-ignore-output"]
fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
for i, m in enumerate(("full", "lora")):
    for j, metric in enumerate(("rc_loss", "fact_rank")):
        plot_live(axes[2 * i + j], results, m, LIVE_STEPS, live[m][metric], metric=metric, seed=SEED, colour=f"C{i}")
        axes[2 * i + j].set_xscale("symlog", linthresh=10)
plt.tight_layout()
plt.show()
for m in live:
    print(f"live {m}: test reverse-complement loss {live[m]['rc_loss']:.3f}, facts ranked first "
          f"{live[m]['fact_rank']:.1%} after {LIVE_STEPS} steps")

# %%
for m in live:
    for metric in ("rc_loss", "fact_rank"):
        print(studies.require_inside(results, m, LIVE_STEPS, live[m][metric], metric=metric), f"({metric})")

# %% [markdown]
# The one sense in which LoRA forgets nothing: switch the adapter off and the frozen $W_0$ answers again, the base
# model to the last digit: its logits on every test fact's prompt equal the base model's, bit for bit.

# %%
ids, _ = collate(facts["test"], ByteTokenizer())
with torch.no_grad(), lora.disabled(live["lora"]["model"]):
    same = torch.equal(live["lora"]["model"](ids), base(ids))
print(f"facts ranked first: base {start['fact_rank']:.1%}, LoRA after {LIVE_STEPS} steps "
      f"{live['lora']['fact_rank']:.1%}; with its adapter disabled, logits on the {len(facts['test'])} test facts "
      f"equal the base model's: {same}")

# %% [markdown]
# ## Why full fine-tuning can go further: the rank of the update
#
# LoRA's update of a layer is $\Delta W = \frac{\alpha}{r} BA$, rank at most $r$ by construction. Full fine-tuning's
# update $\Delta W = W_\text{tuned} - W_0$ has no such limit. Following Biderman et al. (§4.5), count the singular
# values needed to explain 90% of $\sum_i \sigma_i^2$ of each layer's update, for the two live runs (one seed, 50
# steps: a description of these two runs, not a verdict), and set it beside LoRA's $r$.

# %%
full_model, lora_model = live["full"]["model"], live["lora"]["model"]
adapted = [n for n, m in lora_model.named_modules() if isinstance(m, lora.LoRALinear)]  # 7 per block x 4 blocks
ranks = {n: (forgetting.effective_rank(forgetting.weight_delta(full_model, base, n)),
             forgetting.effective_rank(forgetting.weight_delta(lora_model, base, n))) for n in adapted}
rows = []
for kind in dict.fromkeys(n.rsplit(".", 1)[-1] for n in adapted):
    layers = [n for n in adapted if n.endswith(kind)]
    shape = tuple(base.get_submodule(layers[0]).weight.shape)
    rows.append((kind, shape, min(shape), ", ".join(str(ranks[n][0]) for n in layers),
                 ", ".join(str(ranks[n][1]) for n in layers)))
display(table(rows, ["layer (blocks 0-3)", "shape (out, in)", "largest possible rank",
                     f"full FT, {LIVE_STEPS} steps: rank for 90%", f"LoRA r=8, {LIVE_STEPS} steps: rank for 90%"]))
full_rank = statistics.median(r for r, _ in ranks.values())
lora_rank = statistics.median(r for _, r in ranks.values())
print(f"median over the {len(adapted)} layers: full FT needs {full_rank:g} directions for 90% of its update's "
      f"variance, LoRA's update {lora_rank:g} (of r = 8); full FT / r = {full_rank / 8:.1f}x")

# %% [markdown]
# The table describes the two 50-step live runs only (one seed each): a first look at Biderman et al.'s rank
# argument, not a verdict. LoRA's update is capped at rank 8 by construction; full fine-tuning's is not, and the
# numbers above say how many directions it used in 50 steps.
#
# ## Claim check
#
# Each row is one claim of the study, with the margin it declared before running: the difference of the two
# methods' means over five seeds each, its 95% Welch interval, and the verdict `peftlab.evidence.compare` reads off
# it (the cell recomputes every verdict from the per-seed values in the results file). The matched rows read each
# run's facts at the first probe where its validation reverse-complement loss reaches the level, interpolating
# between the two probes around it.

# %%
display(claim_table(results))

# %% [markdown]
# Read against the paper. **LoRA learns less** holds: at each one's own best rate LoRA ends 0.15 nats above full
# fine-tuning on the reverse complement. **LoRA forgets less** does not hold here, by a wide margin: it ends with
# 65 points fewer facts ranked first. **The same trade-off curve** does not hold either: at the same validation loss
# (1.0 or 0.5 nats) LoRA keeps about 70 points fewer facts, far outside the declared 10 points. So on this model the
# short answer is wrong twice over: freezing the base did not protect the facts, and LoRA at the learning rate that
# makes it learn fastest forgot more than full fine-tuning at its own.
#
# Why this differs from Biderman et al., as hypotheses this notebook does not test: they trained Llama-2-7B on
# billions of tokens of code and math, here a 3.3M-parameter model trains 200 steps on DNA; the base model's loss on
# DNA starts at 14 nats, so the first updates are large whatever is trained, and at its best rate (3e-3, ten times
# full fine-tuning's) a rank-8 update puts them into a few directions of every layer; and a small model has little
# room for the new domain next to the old facts. The sweep shows the practical lesson either way: forgetting follows the learning rate
# more than the method, and LoRA at a gentle rate forgets little only because it learns little.
#
# ## Explore: add your own run to the trade-off plot
#
# Pick full fine-tuning or LoRA (rank, targets), a learning rate and a number of steps, and press the button: one
# run is trained and probed along the way (the reverse-complement loss on 64 validation genes, the facts ranked
# first on 80 test facts), and its curve joins the plot. Try full fine-tuning at 1e-5: does it land above or below
# LoRA's curve at the same loss? Try LoRA with $r = 1$ or on $q, v$ only: how far left can it get?

# %%
probe = forgetting.Probe(dna["val"][:64], facts["test"][:80], domain_metric=studies.rc_loss,
                         old_metric=studies.fact_rank)
explorer = TradeoffExplorer(base, probe=probe, batch_size=study.batch_size)
print("explorer probe on the base model:", {k: round(v, 3) for k, v in probe(base).items()})

# %% [markdown]
# ![The explorer below as it first appears, at its default settings](figures/08_explorer.png)
#
# *The explorer below as it first appears, photographed in JupyterLab by `scripts/explorer_pictures.py`; run
# the cell for the live one.*

# %% tags=["explorer", "nbval-ignore-output"]
explorer.show()

# %% [markdown]
# ## Takeaways for the interview
#
# - "PEFT prevents forgetting" is wrong. The frozen base is recoverable (disable the adapter), but the adapted model
#   forgets; here LoRA lost most facts within a dozen steps at its best learning rate.
# - Biderman et al. 2024 find that LoRA learns less *and* forgets less, and that the two methods lie near one
#   trade-off curve. Measured here with five seeds: LoRA learned less (holds) but forgot more, and its curve lay
#   far below full fine-tuning's at matched new-domain loss. The method does not settle the question; measure it.
# - Compare at matched new-domain quality, over learning rates and training length, with a metric that tells lost
#   knowledge from hijacked output (a ranking among candidates, not only greedy exact match).
# - Full fine-tuning's updates have a higher rank than LoRA's (Biderman et al. §4.5); a rank-$r$ adapter cannot
#   represent them, one reason it cannot go as far on a domain far from pre-training (notebook 20).
#
# **Follow-up questions to expect**
# - *How would you reduce forgetting?* A lower learning rate or fewer steps (moving along the curve), mixing in
#   pre-training-like data (replay), or regularising towards $W_0$ (e.g. EWC, Kirkpatrick et al. 2017).
# - *Which LoRA settings forget more?* Whatever lets it move further per step or in total: a higher learning rate
#   (as the sweep shows), and plausibly a higher rank and more target modules; try them in the explorer above.
# - *How do you measure forgetting in practice?* Keep held-out evaluations of the base model's abilities next to
#   the new task's, before and after, at several settings; prefer scoring that cannot be hijacked by the new
#   output format.
