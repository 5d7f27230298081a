# %% [markdown]
# # 20 · When do you need full fine-tuning instead of LoRA?
#
# **The interview question.** *"When would you choose full fine-tuning over LoRA or another PEFT method?"*
#
# **The short answer an interviewer expects**
# - When the target is far from what the base model knows: a new language, a new modality-like domain (DNA,
#   proteins), a large body of new knowledge. A low-rank update cannot hold enough new information.
# - For format, style and tasks close to pre-training, LoRA matches full fine-tuning at a fraction of the cost.
# - Full fine-tuning also when you have the compute and data and want every last point of quality.
#
# ## The precise answer
#
# LoRA (Hu et al. 2021, arXiv 2106.09685) restricts each adapted layer's update to $\Delta W = \frac{\alpha}{r} BA$
# with $B \in \mathbb{R}^{d_\text{out} \times r}$, $A \in \mathbb{R}^{r \times d_\text{in}}$: at most $r$ new directions per
# layer, and none at all in the layers it does not adapt. Hu et al. found very low ranks enough on tasks such as
# WikiSQL and MNLI, which are close to what GPT-3 already models. Biderman et al. (2024, "LoRA Learns Less and
# Forgets Less", arXiv 2405.09673) asked where this breaks: on Llama-2-7B, LoRA trails full fine-tuning most in
# **continued pre-training on code**, far from the base model's data, less in instruction fine-tuning; a higher
# rank and adapting **all linear layers** (not only attention) close part of the gap, but in continued pre-training
# on code not all of it. Their analysis of the updates (notebook 08 repeats it) shows why: full fine-tuning's
# updates need a rank far above the usual LoRA ranks.
#
# So the answer is a measurement, not a rule: compare the two **on your domain, at the same budget, each at its
# own best learning rate**, over LoRA's ranks and targets. We do that here on:
#
# - a domain **absent from pre-training**: `data.dna_task()`, DNA-like genes (motifs from a Markov chain, each
#   followed by its reverse complement); measure: loss on held-out sequences;
# - an **in-distribution** task for contrast: `data.qa_task()`, questions about people the base model read about
#   in pre-training (notebook 10); measure: exact match on held-out people.

# %%
import torch
import matplotlib.pyplot as plt
from peftlab import data, load_base, count_parameters, evaluate_loss, scale
from peftlab import forgetting
from peftlab.evaluate import greedy_accuracy
from peftlab.explore.forgetting import TradeoffExplorer
from peftlab.explore.report import table, claim_check
from peftlab.forgetting import Method
from peftlab.train import train

torch.manual_seed(0)
GPU = scale.gpu()  # PEFTLAB_SCALE=gpu opts in to the larger setting; unset: CPU, on any machine
device = "cuda" if GPU else "cpu"
# The same budget for every method: STEPS optimizer steps of BATCH sequences. CPU: under a minute in all.
STEPS, BATCH = (200, 16) if GPU else (40, 4)
N_TEST = 244 if GPU else 48  # DNA test sequences for the final measurement
QA_STEPS, QA_BATCH = (120, 16) if GPU else (40, 8)

base = load_base(device=device)
dna, qa = data.dna_task(), data.qa_task()
facts = forgetting.fact_subset(120)
QV = ("q_proj", "v_proj")
METHODS = [Method("full")] + [Method("lora", r=r, targets=t) for t in (QV, "all-linear") for r in (1, 8, 64)]
n_params = {m.label: count_parameters(m.prepare(base)) for m in METHODS}
display(table([(m.label, f"{n_params[m.label].trainable:,}", f"{n_params[m.label].percent:.2f}%") for m in METHODS],
              ["method", "trainable parameters", "of the model"]))

# %% [markdown]
# $\alpha = 2r$ throughout (the choice of Biderman et al.), so the update's scale $\alpha / r = 2$ is the same at
# every rank.
#
# ## The learning rates, and how they were chosen
#
# A shared learning rate would favour whichever method it happens to suit: LoRA's best learning rate is typically
# several times higher than full fine-tuning's. Each method gets its own: the one with the lowest DNA validation loss
# (64 held-out sequences) after exactly this budget, from the grid below, extended by one step where the best sat at
# the edge (`forgetting.tune_lr`: one run per learning rate, measured at the end). With a GPU the next cell runs that
# sweep; on a CPU it would take minutes, so the cell uses the values the same sweep picked with the CPU settings
# (same steps, batch and seed; set `TUNE = True` to rerun it). The Q/A learning rates were picked the same way on the
# Q/A validation people.

# %%
TUNE = GPU
GRID = {"full": [1e-4, 3e-4, 1e-3, 3e-3], "lora": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]}
LR = {"full FT": 1e-3, "LoRA r=1 q,v": 3e-2, "LoRA r=8 q,v": 1e-2, "LoRA r=64 q,v": 3e-3,  # CPU settings' sweep
      "LoRA r=1 all-linear": 1e-2, "LoRA r=8 all-linear": 3e-3, "LoRA r=64 all-linear": 1e-3}
QA_LR = {"full FT": 3e-4, "LoRA r=8 q,v": 3e-3, "LoRA r=8 all-linear": 3e-3}
if TUNE:
    tune_probe = lambda m: {"domain_loss": evaluate_loss(m, dna["val"][:64])}
    LR = {m.label: forgetting.tune_lr(base, m, dna["train"], tune_probe, GRID[m.kind], steps=STEPS, batch_size=BATCH)[0]
          for m in METHODS}
    qa_probe = lambda m: {"accuracy": greedy_accuracy(m, qa["val"])}
    QA_LR = {m.label: forgetting.tune_lr(base, m, qa["train"], qa_probe, GRID[m.kind], steps=QA_STEPS, batch_size=QA_BATCH,
                                       key="accuracy", minimize=False)[0]
             for m in METHODS if m.label in QA_LR}
print("DNA learning rates:", {k: f"{v:g}" for k, v in LR.items()})
print("Q/A learning rates:", {k: f"{v:g}" for k, v in QA_LR.items()})

# %% [markdown]
# Note the pattern: with $\alpha/r$ fixed, the best learning rate falls as the rank and the number of adapted layers
# grow, since more trainable directions move the model further per step.
#
# ## Run it: the new domain, every method at the same budget
#
# Each method fine-tunes a fresh copy of the base model on the DNA train split, recording the training loss of every
# step for the learning curves; at the end each model is measured on DNA test sequences (never used for choosing
# anything) and on fact completion, the base model's old knowledge.

# %%
no_probe = lambda m: {}  # the learning curve is the training loss `run` records at every probed step
runs, results = {}, {}
for m in METHODS:
    runs[m.label] = forgetting.run(base, m, dna["train"], no_probe, lr=LR[m.label], steps=STEPS, every=1,
                                 batch_size=BATCH, keep_model=True)
    model = runs[m.label].model
    results[m.label] = {"test_loss": evaluate_loss(model, dna["test"][:N_TEST]), "facts": greedy_accuracy(model, facts)}
    runs[m.label].model = None  # free it; only the numbers are needed from here on
base_test = evaluate_loss(base, dna["test"][:N_TEST])
full = results["full FT"]["test_loss"]
rows = [(label, f"{n_params[label].trainable:,}", f"{LR[label]:g}", f"{r['test_loss']:.3f}", f"{r['test_loss'] - full:+.3f}",
         f"{r['facts']:.0%}") for label, r in results.items()]
display(table(rows, ["method", "trainable", "lr", "DNA test loss", "gap to full FT", "fact completion after"]))
print(f"base model: DNA test loss {base_test:.3f} ({N_TEST} sequences), fact completion {greedy_accuracy(base, facts):.0%}")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
styles = {"full": "k", QV: "C0", "all-linear": "C1"}
SMOOTH = 5  # steps per moving average: the loss of one batch of a few sequences is noisy
for m in METHODS:
    loss = [p["train_loss"] for p in runs[m.label].points[1:]]
    smooth = [sum(loss[i:i + SMOOTH]) / SMOOTH for i in range(len(loss) - SMOOTH + 1)]
    ax1.plot(range(SMOOTH, len(loss) + 1), smooth, color=styles[m.targets if m.kind == "lora" else "full"],
             lw=1 + (0 if m.kind == "full" else [1, 8, 64].index(m.r) * 0.8), label=m.label)
ax1.set_xlabel("step"); ax1.set_ylabel(f"DNA training loss (mean of {SMOOTH} steps)"); ax1.set_yscale("log")
ax1.set_yticks([0.7, 1, 1.5, 2, 3, 5, 8], labels=["0.7", "1", "1.5", "2", "3", "5", "8"]); ax1.minorticks_off()
ax1.set_title("Learning curves, each at its own best lr"); ax1.legend(fontsize=7)
for targets, colour in ((QV, "C0"), ("all-linear", "C1")):
    ms = [m for m in METHODS if m.kind == "lora" and m.targets == targets]
    ax2.plot([n_params[m.label].trainable for m in ms], [results[m.label]["test_loss"] for m in ms], "o-", color=colour,
             label=f"LoRA {'q,v' if targets == QV else targets}, r = 1, 8, 64")
ax2.axhline(full, color="k", ls="--", label=f"full FT ({n_params['full FT'].trainable:,} params)")
ax2.set_xscale("log"); ax2.set_xlabel("trainable parameters"); ax2.set_ylabel("DNA test loss")
ax2.set_title(f"After {STEPS} steps"); ax2.legend(fontsize=7)
plt.tight_layout(); plt.show()

# %% [markdown]
# ## Measure: where the gap closes, and where it does not

# %%
lora_labels = [m.label for m in METHODS if m.kind == "lora"]
best_lora = min(lora_labels, key=lambda k: results[k]["test_loss"])
worst_lora = max(lora_labels, key=lambda k: results[k]["test_loss"])
gap = {k: results[k]["test_loss"] - full for k in lora_labels}
rank_helps = {t: [gap[f"LoRA r={r} {t}"] for r in (1, 8, 64)] for t in ("q,v", "all-linear")}
targets_help = {r: gap[f"LoRA r={r} all-linear"] < gap[f"LoRA r={r} q,v"] for r in (1, 8, 64)}
CLOSED = 0.05  # nats/byte: a gap this small counts as closed
for t, g in rank_helps.items():
    print(f"LoRA {t:10s}: gap to full FT at r = 1, 8, 64: " + ", ".join(f"{x:+.3f}" for x in g))
print("all-linear beats q,v at the same rank:", {f"r={r}": v for r, v in targets_help.items()})
print(f"smallest gap: {best_lora} ({gap[best_lora]:+.3f}); largest: {worst_lora} ({gap[worst_lora]:+.3f}); "
      f"closed (< {CLOSED}) by any LoRA: {min(gap.values()) < CLOSED}")

# %% [markdown]
# Read the table and the plots together. At this budget no LoRA variant reaches full fine-tuning's loss on the new
# domain. Each of the two levers moves it closer: a higher rank, and adapting every linear layer instead of only the
# query and value projections; together (r = 64 on all linear layers, a quarter of the model's parameters trainable)
# they close the most, and still leave a clear gap. Per trainable parameter (right panel), spreading a budget over all
# layers does at least as well as piling rank into $q, v$.
#
# The last column is the price, and it is notebook 08's subject: at the learning rates that learn the new domain
# fastest, every method here lost most or all of the old facts.
#
# ## Contrast: an in-distribution task
#
# Questions about people the base model read about in pre-training (notebook 10): the knowledge is in the model, only
# the format is new. Same protocol: each method at its own learning rate and the same budget; measured by exact match
# on the held-out people of the test split.

# %%
qa_results = {}
for m in METHODS:
    if m.label in QA_LR:
        model = m.prepare(base)
        train(model, qa["train"], steps=QA_STEPS, lr=QA_LR[m.label], batch_size=QA_BATCH, progress=False)
        qa_results[m.label] = greedy_accuracy(model, qa["test"])
qa_full = qa_results["full FT"]
qa_best = max((k for k in qa_results if k != "full FT"), key=qa_results.get)
display(table([(k, f"{QA_LR[k]:g}", f"{v:.1%}", f"{v - qa_full:+.1%}") for k, v in qa_results.items()],
              ["method", "lr", "Q/A exact match, held-out people", "gap to full FT"]))
print(f"base model before fine-tuning: {greedy_accuracy(base, qa['test']):.1%}")

# %% [markdown]
# Here the picture turns around: LoRA on all linear layers does as well as full fine-tuning with a few percent of the
# trainable parameters, because the task needs little that is new (a format over facts the model already holds).
# LoRA on $q, v$ only trails at this short budget: the smallest configuration learns the format more slowly.

# %% [markdown]
# ## Claim check
#
# The two tasks are measured differently (a loss on DNA, an accuracy on Q/A), so the gaps are compared relative to
# full fine-tuning: how much higher LoRA's best DNA loss is than full fine-tuning's, and how much of full
# fine-tuning's Q/A accuracy LoRA's best reaches.

# %%
dna_rel = gap[best_lora] / full  # best LoRA's excess loss, relative
qa_rel = (qa_full - qa_results[qa_best]) / qa_full  # best LoRA's shortfall in accuracy, relative
display(claim_check([
    ("a domain absent from pre-training needs full FT", "Biderman et al. 2024: LoRA trails most in code CPT",
     f"DNA test loss: full FT {full:.3f}, best LoRA ({best_lora}) {results[best_lora]['test_loss']:.3f} "
     f"({dna_rel:+.0%})", "holds" if gap[best_lora] >= CLOSED else "does not hold: LoRA closes the gap"),
    ("higher rank closes the gap", "Biderman et al.: higher r helps, closes most of the IFT gap, not CPT's",
     "gap at r = 1 → 64: " + "; ".join(f"{t} {g[0]:+.2f} → {g[-1]:+.2f}" for t, g in rank_helps.items()),
     "holds in part" if all(g[-1] < g[0] for g in rank_helps.values()) and min(gap.values()) >= CLOSED
     else "holds" if all(g[-1] < g[0] for g in rank_helps.values()) else "does not hold"),
    ("adapting all linear layers beats attention only", "Biderman et al.: target all modules",
     "all-linear < q,v at r = " + ", ".join(str(r) for r, v in targets_help.items() if v),
     "holds" if all(targets_help.values()) else "holds at some ranks" if any(targets_help.values()) else "does not hold"),
    ("in distribution LoRA matches full FT", "Hu et al. 2021: LoRA ≈ full FT on WikiSQL, MNLI (GPT-3)",
     f"Q/A: full FT {qa_full:.0%}, best LoRA ({qa_best}) {qa_results[qa_best]:.0%} ({-qa_rel:+.0%})",
     "holds" if qa_rel <= 0.05 else "nearly" if qa_rel <= 0.15 else "does not hold at this budget"),
    ("the gap is largest far from pre-training", "Biderman et al.: largest in continued pre-training on code",
     f"relative gap: DNA {dna_rel:.0%} of the loss vs Q/A {qa_rel:.0%} of the accuracy", dna_rel > qa_rel),
]))

# %% [markdown]
# ## Explore: any method, rank, targets and learning rate on the new domain
#
# Train one run and add it to the plot of DNA loss (x) against fact completion (y), next to full fine-tuning at its
# tuned learning rate. Look for the learning rate at which LoRA with a given rank stops improving, and how far right
# it can get compared with full fine-tuning; then watch the y axis: the runs that go furthest are the ones that forget.

# %% tags=["nbval-skip"]
reference = forgetting.run(base, Method("full"), dna["train"], forgetting.Probe(dna["val"][:24], facts), lr=LR["full FT"],
                         steps=STEPS, every=max(1, STEPS // 5), batch_size=BATCH)
TradeoffExplorer(base, curves=[reference], probe=forgetting.Probe(dna["val"][:24], facts), batch_size=BATCH).show()

# %% [markdown]
# ## Takeaways for the interview
#
# - Reach for full fine-tuning when the target is far from what the base model knows (here a DNA-like language it had
#   never seen; in Biderman et al., continued pre-training on code) and you need the last bit of quality on it: at the
#   same budget and each at its best learning rate, full fine-tuning reached the lowest loss in the table above.
# - Before giving up on LoRA, give it capacity where it matters: adapt all linear layers, not only $q, v$, and raise
#   the rank; both closed part of the gap here, and the best learning rate changes with them, so retune it.
# - For tasks the base model already half-knows (format, style, Q/A over known facts), LoRA gets close to full
#   fine-tuning at a fraction of the trainable parameters, as in the Q/A contrast above.
# - Full fine-tuning's extra reach comes with forgetting (notebook 08): check the old abilities too.
#
# **Follow-up questions to expect**
# - *Why can't LoRA represent what full fine-tuning learns?* Its update has rank at most $r$ per layer; full
#   fine-tuning's updates on a new domain need far more directions (notebook 08, Biderman et al. section 5).
# - *How would you decide in practice?* Run both on a small budget on your data, each at a tuned learning rate, and
#   compare on held-out data; if LoRA at a high rank on all layers still trails, the domain needs full fine-tuning
#   (or continued pre-training first, then LoRA for the task).
# - *What is in between?* Higher-rank or all-layer LoRA, unfreezing embeddings and the head for a new vocabulary,
#   or full fine-tuning of a few layers.
