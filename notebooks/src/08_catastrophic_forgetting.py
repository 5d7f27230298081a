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
# Biderman et al. (2024, "LoRA Learns Less and Forgets Less", arXiv 2405.09673) measured this properly on
# Llama-2-7B trained on code and math: LoRA reaches a lower accuracy on the new domain than full fine-tuning
# (it *learns less*), and it keeps more of the base model's abilities (it *forgets less*). The way to compare
# the two is not one setting of each, but the **trade-off curve**: new-domain performance against old-knowledge
# performance over learning rates and training lengths. They find that the two methods lie close to one
# curve, LoRA at the learn-less, forget-less end; at matched new-domain performance LoRA is not a free lunch.
# They also find that the weight updates of full fine-tuning are far from low rank: the rank needed to explain
# 90% of the update's variance is 10-100 times the ranks LoRA is usually run with.
#
# This notebook measures the same curves on peftlab's base model:
#
# - **new domain**: `data.dna_task()`, DNA-like "genes" built from motifs, each followed by its reverse
#   complement. No such text is in the pre-training corpus. Measure: mean next-token loss on held-out sequences.
# - **old knowledge**: `data.fact_completion()`, the facts the base model learned in pre-training ("Tevel lives
#   in" → " Varn."). Measure: exact-match accuracy of greedy completion.
# - **methods**: full fine-tuning, and LoRA with $r = 8$ on every linear layer (`all-linear`, $\alpha = 2r$ as in
#   Biderman et al.).
# - **the curve**: one training run per (method, learning rate), probed every few steps through `train()`'s
#   `on_step` callback, so a whole curve costs one run. `peftlab.forgetting` holds the pieces.

# %%
import statistics
import torch
import matplotlib.pyplot as plt
from peftlab import data, load_base, lora, scale
from peftlab import forgetting
from peftlab.forgetting import Method, Probe
from peftlab.evaluate import complete
from peftlab.explore.forgetting import TradeoffExplorer, plot_curves
from peftlab.explore.report import table, claim_check

torch.manual_seed(0)
GPU = scale.gpu()  # PEFTLAB_SCALE=gpu opts in to the larger setting; unset: CPU, on any machine
device = "cuda" if GPU else "cpu"
# CPU: 2 cores, under a minute for the whole notebook. GPU: longer runs, bigger probes, more learning rates.
STEPS, EVERY, BATCH = (200, 10, 16) if GPU else (48, 12, 4)
N_DOMAIN, N_FACTS = (244, 480) if GPU else (24, 120)

base = load_base(device=device)
dna = data.dna_task()
probe = Probe(dna["val"][:N_DOMAIN], forgetting.fact_subset(N_FACTS))
start = probe(base)
print(f"DNA sequences: {len(dna['train'])} train / {len(dna['val'])} val / {len(dna['test'])} test")
print("example:", dna["train"][0])
print(f"base model: DNA val loss {start['domain_loss']:.3f} nats/byte on {N_DOMAIN} sequences, "
      f"fact completion {start['old_accuracy']:.1%} on {N_FACTS} facts")

# %% [markdown]
# The base model has never seen a gene, and its loss on them is very high: it predicts English-like bytes with
# confidence. It completes most facts; that is what we will watch.

# %%
gene = dna["val"][0]
prompt = gene[:gene.index("|") + 1]
print("prompt:        ", prompt)
print("truth:         ", gene[len(prompt):])
print("base continues:", repr(complete(base, [prompt], len(gene) - len(prompt))[0]))

# %% [markdown]
# ## Run it: one curve per (method, learning rate)
#
# Each run fine-tunes a fresh copy of the base model on the DNA train split at a constant learning rate and
# probes it at step 0 and every few steps: DNA validation loss on a fixed subset of sequences, and fact completion
# on a fixed random subset of the 480 facts (`forgetting.greedy_accuracy`: the same count as `exact_match`, in one
# forward pass). The learning rates span each method's usual range; LoRA is usually run at a higher one.

# %%
METHODS = {"full FT": Method("full"), "LoRA r=8": Method("lora", r=8)}
LRS = {"full FT": [1e-4, 1e-3], "LoRA r=8": [3e-4, 1e-3, 3e-3]}
if GPU:
    METHODS["LoRA r=64"] = Method("lora", r=64)
    LRS = {"full FT": [3e-5, 1e-4, 3e-4, 1e-3], "LoRA r=8": [3e-4, 1e-3, 3e-3], "LoRA r=64": [3e-4, 1e-3]}
curves = {name: [forgetting.run(base, m, dna["train"], probe, lr=lr, steps=STEPS, every=EVERY, batch_size=BATCH,
                              start=start, keep_model=True)  # models kept for the rank analysis below
                 for lr in LRS[name]] for name, m in METHODS.items()}
print("DNA val loss / fact completion at steps", [p["step"] for p in curves["full FT"][0].points])
for group in curves.values():
    for c in group:
        print(f"{c.label:32s}", " ".join(f"{p['domain_loss']:5.2f}/{p['old_accuracy']:4.0%}" for p in c.points))

# %% [markdown]
# Each row reads along one run. Now the picture: each line is one run, its points the probes; further right means
# a lower DNA loss (learned more), higher means forgot less. The dotted line is the base model.

# %%
fig, ax = plt.subplots(figsize=(8, 4.5))
plot_curves(ax, [c for g in curves.values() for c in g], base_accuracy=start["old_accuracy"])
ax.set_xscale("log")  # the first steps cut the loss many times over; the comparison lives at the low end
ax.set_xticks([10, 5, 3, 2, 1.5, 1, 0.7], labels=["10", "5", "3", "2", "1.5", "1", "0.7"])
ax.minorticks_off()
ax.set_title("Learning vs forgetting on a new domain (DNA), measured")
plt.show()

# %% [markdown]
# ## Measure: the one-setting view, then the matched view
#
# The usual comparison takes each method at the end of a run at the same learning rate and number of steps:

# %%
SAME_LR = 1e-3
ends = {n: next(c for c in curves[n] if c.lr == SAME_LR).final for n in ("full FT", "LoRA r=8")}
rows = [("base model", "-", 0, f"{start['domain_loss']:.3f}", f"{start['old_accuracy']:.1%}")]
rows += [(n, f"{SAME_LR:g}", e["step"], f"{e['domain_loss']:.3f}", f"{e['old_accuracy']:.1%}") for n, e in ends.items()]
lora_model = next(c for c in curves["LoRA r=8"] if c.lr == SAME_LR).model
with lora.disabled(lora_model):  # the frozen W0 alone: the one sense in which nothing was lost
    off = probe(lora_model)
rows.append(("LoRA r=8, adapter disabled", f"{SAME_LR:g}", ends["LoRA r=8"]["step"], f"{off['domain_loss']:.3f}",
             f"{off['old_accuracy']:.1%}"))
display(table(rows, ["method", "lr", "steps", "DNA val loss", "fact completion"]))

# %% [markdown]
# At one learning rate and one number of steps, full fine-tuning learned more *and* forgot more; with the adapter
# switched off, the LoRA model is the base model again, to the last digit. That alone does not
# say which method gives the better trade-off: full fine-tuning also moved further. The fair comparison reads both
# methods at the **same DNA loss**: for each loss level that both methods reach, take from each method the best fact
# accuracy any of its runs keeps when it first gets there (linear interpolation between the two probes that
# bracket the level). The levels run from the lowest loss the less-learning method reached to twice that loss.

# %%
rows = forgetting.matched(curves, n=5, span=2.0)
display(table([(f"{r['domain_loss']:.3f}", *(f"{r[n]:.1%}" for n in curves), f"{r['LoRA r=8'] - r['full FT']:+.1%}")
               for r in rows], ["DNA val loss (matched)", *(f"{n} keeps" for n in curves), "LoRA r=8 - full FT"]))
gap, verdict = forgetting.verdict(rows, "LoRA r=8", "full FT", tolerance=0.03)
reach = {n: forgetting.lowest_loss(g) for n, g in curves.items()}
print("lowest DNA val loss reached:", ", ".join(f"{n} {v:.3f}" for n, v in reach.items()))
print(f"mean gap at matched DNA loss (LoRA r=8 - full FT): {gap:+.1%} -> {verdict}")

# %% [markdown]
# Read the trade-off plot and this table together. LoRA at the learning rates it is usually run at lost most of the
# facts on its way down to the DNA losses in this table, while full fine-tuning at a small learning rate got there and
# kept nearly all of them; LoRA at its smallest learning rate forgot little, but only because it had learned little.
# Freezing the base limits how far the model moves per step and in total; it does not make the path it takes a
# kinder one. A likely reason why LoRA forgot so fast here (a guess this notebook does not test): the base model's
# loss on DNA is enormous, so the first updates are large whatever is trained, and a rank-8 update has only a few
# directions to put them in.

# %% [markdown]
# ## Why full fine-tuning can go further: the rank of the update
#
# LoRA's update of a layer is $\Delta W = \frac{\alpha}{r} BA$, rank at most $r$ by construction. Full fine-tuning's
# update $\Delta W = W_\text{tuned} - W_0$ has no such limit. Following Biderman et al. (section 5), count the singular
# values needed to explain 90% of $\sum_i \sigma_i^2$ of one layer's update, for the runs at the shared learning rate,
# and set it beside LoRA's $r$ and a Gaussian random matrix of the same shape (which needs most of its directions).

# %%
full_model, lora_model = (next(c for c in curves[n] if c.lr == SAME_LR).model for n in ("full FT", "LoRA r=8"))
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
                     f"full FT, lr {SAME_LR:g}: rank for 90%", f"LoRA r=8, lr {SAME_LR:g}: rank for 90%"]))
full_rank = statistics.median(r for r, _ in ranks.values())
lora_rank = statistics.median(r for _, r in ranks.values())
ratio = full_rank / METHODS["LoRA r=8"].r
print(f"median over the {len(adapted)} layers: full FT needs {full_rank:g} directions for 90% of its update's variance, "
      f"LoRA's update {lora_rank:g} (of r = 8); full FT / r = {ratio:.1f}x")

# %% [markdown]
# Full fine-tuning's update already uses more directions than LoRA's in every kind of layer, but after a few dozen
# steps it is nowhere near full rank, and the ratio to $r$ is far from Biderman et al.'s 10-100x. Their updates came
# from up to billions of tokens, and they report that the rank of the update grows as training goes on; a short run
# on a small model measures the early end of that. The trained LoRA update, for its part, does not even use all of
# its $r = 8$ directions.
#
# The spectrum of one layer's update, with a Gaussian random matrix of the same shape for scale (a matrix with no
# structure needs most of its directions):

# %%
LAYER = "layers.1.mlp.down_proj"
deltas = {f"full FT, lr {SAME_LR:g}": forgetting.weight_delta(full_model, base, LAYER),
          f"LoRA r=8, lr {SAME_LR:g}": forgetting.weight_delta(lora_model, base, LAYER),
          "random (Gaussian)": torch.randn(base.get_submodule(LAYER).weight.shape, generator=torch.Generator().manual_seed(0))}
fig, ax = plt.subplots(figsize=(6.5, 3.2))
for k, d in deltas.items():
    s2 = torch.linalg.svdvals(d.double()) ** 2
    ax.plot(range(1, len(s2) + 1), (s2.cumsum(0) / s2.sum()).numpy(), label=f"{k} (90% at {forgetting.effective_rank(d)})")
ax.axhline(0.9, color="grey", lw=0.8, ls=":")
ax.set_xscale("log"); ax.set_xlabel("number of singular directions"); ax.set_ylabel("share of variance")
ax.set_title(f"Spectrum of the update of {LAYER}"); ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Claim check

# %%
lora_min = min(p["old_accuracy"] for c in curves["LoRA r=8"] for p in c.points)
display(claim_check([
    ("PEFT prevents forgetting (the frozen base keeps the knowledge)",
     "Biderman et al. 2024: LoRA forgets less, not nothing",
     f"LoRA r=8 fact completion {start['old_accuracy']:.0%} → as low as {lora_min:.0%} along its runs",
     "does not hold" if lora_min < start["old_accuracy"] - 0.05 else "holds here"),
    ("LoRA learns less", "Biderman et al.: below full FT on the target domain (code, math)",
     f"lowest DNA val loss: full FT {reach['full FT']:.3f}, LoRA r=8 {reach['LoRA r=8']:.3f}",
     reach["LoRA r=8"] > reach["full FT"]),
    ("LoRA forgets less (same lr, same steps)", "Biderman et al.: keeps more of the source-domain abilities",
     f"lr {SAME_LR:g}, {STEPS} steps: facts {ends['full FT']['old_accuracy']:.0%} (full FT) vs "
     f"{ends['LoRA r=8']['old_accuracy']:.0%} (LoRA)", ends["LoRA r=8"]["old_accuracy"] > ends["full FT"]["old_accuracy"]),
    ("so LoRA gives the better learning-forgetting trade-off", "Biderman et al.: the two lie near one trade-off curve",
     f"at matched DNA loss, LoRA r=8 - full FT = {gap:+.1%} on average",
     ("holds: " if gap > 0.03 else "does not hold: " if gap < -0.03 else "neither: ") + verdict),
    ("full FT's updates have 10-100x the rank of LoRA's", "Biderman et al. section 5 (rank for 90% of variance)",
     f"median over {len(adapted)} layers: {full_rank:g} vs r = 8 ({ratio:.1f}x), after {STEPS} steps",
     "holds" if 10 <= ratio else f"higher, but {ratio:.1f}x here" if ratio > 1 else "does not hold"),
]))

# %% [markdown]
# ## Explore: add your own run to the trade-off plot
#
# Pick full fine-tuning or LoRA (rank, targets), a learning rate and a number of steps, and press the button: one
# run is trained and probed along the way, and its curve joins the ones above. Try full fine-tuning at a small
# learning rate: does it land above or below LoRA's curve at the same DNA loss? Try LoRA with $r = 1$ or on
# $q, v$ only: how far right can it get?

# %% tags=["nbval-skip"]
explorer = TradeoffExplorer(base, curves=[c for g in curves.values() for c in g], probe=probe, batch_size=BATCH)
explorer.show()

# %% [markdown]
# ## Takeaways for the interview
#
# - "PEFT prevents forgetting" is too strong. The frozen base is recoverable (disable the adapter), but the adapted
#   model forgets; here LoRA's fact completion collapsed at its usual learning rates as it learned the new domain.
# - LoRA **learns less and forgets less** (Biderman et al. 2024): at the same learning rate and steps it moves the
#   model less, for better and worse.
# - Judge the trade-off, not one point: plot new-domain quality against old-knowledge quality over learning rates and
#   steps, and compare at matched new-domain quality. The verdict computed above is this notebook's answer on this
#   model (full fine-tuning at a small learning rate had the better trade-off); the paper's answer at 7B is that the
#   two methods lie close to one curve. Neither supports "LoRA prevents forgetting".
# - Full fine-tuning's updates have a higher rank than LoRA's, increasingly so with longer training (Biderman et al.);
#   a rank-$r$ adapter cannot represent them, one reason it cannot go as far on a domain far from pre-training
#   (notebook 20).
#
# **Follow-up questions to expect**
# - *How would you reduce forgetting with full fine-tuning?* A lower learning rate or fewer steps (move along the
#   curve), mixing in pre-training-like data (replay), or regularising towards $W_0$ (e.g. EWC, Kirkpatrick et al. 2017).
# - *Which LoRA settings forget more?* Whatever lets it move further per step or in total: a higher learning rate (as
#   measured here), and plausibly a higher rank and more target modules; try them in the explorer above.
# - *How do you measure forgetting in practice?* Keep held-out evaluations of the base model's abilities (general
#   benchmarks, the base's own tasks) next to the new task's, before and after, at several settings.
