# %% [markdown]
# # 18 · Does LoRA slow down inference?
#
# **The interview question.** *"Does LoRA add latency at inference time? When would you merge the adapter, and
# when would you keep it separate?"*
#
# **The short answer an interviewer expects**
# - Merged ($W = W_0 + \frac{\alpha}{r} B A$): no extra latency at all, the model has the base model's shapes.
# - Unmerged: a small overhead, two extra thin matrix multiplications per adapted layer.
# - Unmerged is what you keep when one base model serves many adapters; systems such as S-LoRA batch requests
#   for different adapters together.
#
# ## The precise answer
#
# An adapted linear layer computes $h = W_0 x + s\,B(Ax)$ with $A \in \mathbb{R}^{r \times k}$,
# $B \in \mathbb{R}^{d \times r}$, $s = \alpha / r$ (Hu et al. 2021, arXiv 2106.09685). For a batch of $b$ sequences
# of $s_{len}$ tokens:
#
# | | FLOPs of the layer | kernels |
# |---|---|---|
# | base / merged | $2\,b\,s_{len}\,k\,d$ | one GEMM |
# | unmerged | $2\,b\,s_{len}\,k\,d + 2\,b\,s_{len}\,r\,(k + d)$ | GEMM + two thin GEMMs + scale + add |
#
# The relative FLOP overhead of one square layer is $r(k+d)/(kd) = 2r/d$: 3% at $r = 16$, $d = 1024$. What the
# formula leaves out is that the extra work comes as *separate, small operations* (two thin GEMMs, a scale, an
# add), each with a fixed cost and its own pass over memory. On a small model, or at a small rank, those fixed
# costs outweigh the FLOPs, and the measured overhead can be several times the FLOP share.
#
# Merging removes the overhead but binds the model to one adapter: switching means unmerging and merging again
# (one $d \times r \times k$ product per layer), and a batch can no longer mix requests for different adapters.
# Serving many adapters unmerged over one base is what S-LoRA (Sheng et al. 2023, arXiv 2311.03285) is built for:
# adapters paged in and out of GPU memory and custom kernels for batches that mix adapters, with up to 4x the
# throughput of Hugging Face PEFT and thousands of adapters on one GPU.
#
# Below: FLOPs counted exactly from the model's layers, then latency measured for base, merged and unmerged
# models across rank and batch size.

# %%
import copy
import statistics

import torch
import matplotlib.pyplot as plt
from peftlab import load_base, lora, scale
from peftlab.explore.report import table, claim_check
from peftlab.measure import forward_fn, interleaved_samples, paired_ratio

torch.manual_seed(0)
GPU = scale.gpu()  # PEFTLAB_SCALE=gpu opts in to the larger setting; unset: CPU, on any machine
device = "cuda" if GPU else "cpu"
RANKS = (4, 16, 64)
BATCHES = (1, 8, 32, 128) if GPU else (1, 8, 32)  # a larger setting where a GPU is present
SEQ = 64
# timed rounds per batch size: small batches are cheap, so they get more rounds to beat the noise
ROUNDS = {b: 30 for b in BATCHES} if GPU else {1: 40, 8: 15, 32: 7}
TARGETS = ["q_proj", "v_proj"]

base = load_base(device=device)
print(f"d_model {base.config.d_model}, {base.config.n_layers} layers; LoRA on {TARGETS}; "
      f"prefill of {SEQ} tokens per sequence")

# %% [markdown]
# ## Build the three models and check they compute the same thing
#
# A trained adapter has $B \neq 0$, so we give $B$ random values (`lora.randomize_B`) before merging; at
# initialisation $B = 0$ and merging would change nothing.

# %%
def build(r):
    """(merged, unmerged) copies of the base with the same r=`r` adapter."""
    unmerged = lora.add(copy.deepcopy(base), r=r, alpha=2 * r, targets=TARGETS)
    lora.randomize_B(unmerged, std=0.02)
    merged = copy.deepcopy(unmerged)
    lora.merge(merged)
    return merged, unmerged

models = {r: build(r) for r in RANKS}
ids = torch.randint(0, 256, (2, SEQ), generator=torch.Generator().manual_seed(0)).to(device)
with torch.no_grad():
    for r, (merged, unmerged) in models.items():
        diff = (merged(ids) - unmerged(ids)).abs().max().item()
        changed = (unmerged(ids) - base(ids)).abs().max().item()
        # the bound, not the float-rounding residue itself (its last digits depend on the instruction set)
        print(f"r={r:>2}: merged vs unmerged max |logit difference| below 1e-4: {diff < 1e-4}; "
              f"the adapter changes the logits (by more than 1e-2): {changed > 1e-2}")

# %% [markdown]
# "Same shapes by construction": `lora.unload` folds the adapter in and removes the wrappers, leaving a model
# whose every layer has the base model's type and shape.

# %%
unloaded = lora.unload(copy.deepcopy(models[16][1]))
def shapes(model):
    return [(n, type(m).__name__, tuple(m.weight.shape)) for n, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))]

print("unloaded model has the base model's layers, types and shapes:", shapes(unloaded) == shapes(base))

# %% [markdown]
# ## FLOPs, counted from the model
#
# `linear_flops` walks the model: $2\,b\,s\,k\,d$ for every linear layer (the head included), plus
# $2\,b\,s\,r\,(k+d)$ for every adapter that runs unmerged. Attention scores and elementwise work are left out,
# so the overhead below is an upper bound on the share of FLOPs LoRA adds.

# %%
def linear_flops(model, b, s):
    total = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):  # the base layers inside LoRA wrappers included
            total += 2 * b * s * m.in_features * m.out_features
        elif isinstance(m, lora.LoRALinear) and not m.merged and m.active in m.config:
            total += 2 * b * s * m.config[m.active].r * (m.in_features + m.out_features)
    return total

base_flops = linear_flops(base, 1, SEQ)
flop_overhead = {}
rows = []
for r, (merged, unmerged) in models.items():
    assert linear_flops(merged, 1, SEQ) == base_flops
    extra = linear_flops(unmerged, 1, SEQ) - base_flops
    flop_overhead[r] = extra / base_flops
    d = base.config.d_model
    per_layer = r * (d + d) / (d * d)
    rows.append((r, f"{base_flops:,}", f"{base_flops:,}", f"{base_flops + extra:,}", f"{per_layer:.2%}",
                 f"{flop_overhead[r]:.2%}"))
display(table(rows, ["r", "base FLOPs", "merged FLOPs", "unmerged FLOPs", "per adapted layer", "whole model"]))
print("FLOPs per sequence of", SEQ, "tokens; the overhead is the same at every batch size (all terms scale with b)")

# %% [markdown]
# Merged is identical to base; unmerged adds $2r/d$ on each adapted $256 \times 256$ layer, and less on the whole
# model because only 2 of the 7 linear layers per block (and not the head) carry an adapter.
#
# ## Latency, measured
#
# For each batch size we time one forward pass (no gradients) of the base model, of the unmerged models at every
# rank and of the merged ones, all alternating round by round (`interleaved_samples`). Each ratio to the base is
# the median of the per-round ratios. A second copy of the base model runs alongside as a control: it computes
# exactly what the base does, so its ratio shows how large the measurement noise is on this machine. Times change
# from run to run, so these cells are not compared on re-execution.

# %% tags=["nbval-ignore-output"]
control = copy.deepcopy(base)
ratio, latency = {}, {}  # (batch, model) -> ratio to base (paired), median seconds
for b in BATCHES:
    x = torch.randint(0, 256, (b, SEQ), generator=torch.Generator().manual_seed(b)).to(device)
    fns = {"base": forward_fn(base, x), "base (control copy)": forward_fn(control, x)}
    for r, (merged, unmerged) in models.items():
        fns[f"merged r={r}"], fns[f"unmerged r={r}"] = forward_fn(merged, x), forward_fn(unmerged, x)
    samples = interleaved_samples(fns, rounds=ROUNDS[b], warmup=1)
    for name in fns:
        ratio[b, name] = paired_ratio(samples, name, "base")
        latency[b, name] = statistics.median(samples[name])
noise = max(abs(ratio[b, "base (control copy)"] - 1) for b in BATCHES)

rows = []
for b in BATCHES:
    rows.append((b, "base", "-", f"{latency[b, 'base'] * 1e3:.2f} ms", "1.000", "-"))
    rows.append((b, "base (control copy)", "-", f"{latency[b, 'base (control copy)'] * 1e3:.2f} ms",
                 f"{ratio[b, 'base (control copy)']:.3f}", "0.00%"))
    for kind in ("merged", "unmerged"):
        for r in RANKS:
            rows.append((b, kind, r, f"{latency[b, f'{kind} r={r}'] * 1e3:.2f} ms", f"{ratio[b, f'{kind} r={r}']:.3f}",
                         f"{flop_overhead[r]:.2%}" if kind == "unmerged" else "0.00%"))
display(table(rows, ["batch", "model", "r", "latency (median)", "/ base (paired)", "FLOP overhead"]))
print(f"noise: the control copy differs from the base by up to {noise:.1%}")

# %% tags=["nbval-ignore-output"]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
colors = dict(zip(BATCHES, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
for b in BATCHES:
    for kind, ls in (("merged", "--"), ("unmerged", "-")):
        axes[0].plot(RANKS, [100 * (ratio[b, f"{kind} r={r}"] - 1) for r in RANKS], ls=ls, marker="o",
                     color=colors[b], label=f"{kind}, batch {b}")
axes[0].plot(RANKS, [100 * flop_overhead[r] for r in RANKS], "k:", marker="s", label="FLOP overhead")
axes[0].axhspan(-100 * noise, 100 * noise, color="grey", alpha=0.2, label="noise (control copy)")
axes[0].set_xscale("log", base=2); axes[0].set_xticks(RANKS, [str(r) for r in RANKS])
axes[0].set_xlabel("rank r"); axes[0].set_ylabel("latency over base (%)"); axes[0].legend(fontsize=7, ncol=2)
width = 0.25
for i, kind in enumerate(("base", "merged r=16", "unmerged r=16")):
    axes[1].bar([j + (i - 1) * width for j in range(len(BATCHES))], [latency[b, kind] * 1e3 for b in BATCHES],
                width=width, label=kind)
axes[1].set_xticks(range(len(BATCHES)), [f"batch {b}" for b in BATCHES]); axes[1].set_yscale("log")
axes[1].set_ylabel(f"ms per forward ({SEQ} tokens each)"); axes[1].legend(fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# Read the left plot against the grey band and the dotted FLOP line. Merged models stay within the noise at every
# rank: the same GEMMs run, and peftlab's wrapper only adds one Python call per adapted layer that returns at once
# (`lora.unload` removes even that). Unmerged models cost more, and more with the rank; where they sit above the
# dotted line, the extra time is the price of launching small separate operations rather than of their FLOPs.
#
# ## Claim check
#
# The verdicts compared on re-execution rest on what cannot change between runs (shapes and FLOPs); the measured
# verdicts follow in a cell of their own.

# %%
display(claim_check([
    ("merged: zero extra latency", "W0 + (alpha/r) B A has W0's shape (Hu et al. 2021, section 4.2)",
     f"merged FLOPs = base FLOPs at r={', '.join(map(str, RANKS))}; unloaded layers identical: "
     f"{shapes(unloaded) == shapes(base)}",
     all(linear_flops(m, 1, SEQ) == base_flops for m, _ in models.values()) and shapes(unloaded) == shapes(base)),
    ("unmerged: small overhead", "two thin matmuls per adapted layer: 2 b s r (k + d) FLOPs",
     "FLOP overhead " + ", ".join(f"r={r}: {flop_overhead[r]:.2%}" for r in RANKS),
     "holds in FLOPs (< 10% up to r=64)" if max(flop_overhead.values()) < 0.10 else "not in FLOPs at r=64"),
]))

# %% [markdown]
# Not measured here (one process, one adapter per model): serving many adapters unmerged and batching across them,
# as S-LoRA does (up to 4x the throughput of PEFT, arXiv 2311.03285).

# %% tags=["nbval-ignore-output"]
worst_merged = max(abs(ratio[b, f"merged r={r}"] - 1) for b in BATCHES for r in RANKS)
unmerged16 = {b: ratio[b, "unmerged r=16"] - 1 for b in BATCHES}
display(claim_check([
    ("merged: zero extra latency", "same shapes, same kernels",
     f"largest |merged / base - 1| over ranks and batches: {worst_merged:.1%}; noise (control copy): {noise:.1%}",
     "holds (within noise + 3%)" if worst_merged <= noise + 0.03 else "does not hold on this run"),
    ("unmerged: small overhead", f"FLOP overhead at r=16: {flop_overhead[16]:.2%}",
     "measured at r=16: " + ", ".join(f"batch {b}: {v:+.1%}" for b, v in unmerged16.items()),
     "holds (< 10% at every batch)" if max(unmerged16.values()) < 0.10 else "larger than 10% at some batch here"),
]))

# %% [markdown]
# ## Explore: rank and batch against latency
#
# Pick a rank and a batch size: the widget builds the adapter, times base, merged and unmerged forward passes
# (alternating, medians) and draws the bars. `measure_latency` holds the logic and returns a dict; the widget
# only draws it.

# %%
def measure_latency(r, batch, rounds=5):
    """Median forward latency of base, merged and unmerged at rank r, paired ratios, FLOP overhead."""
    merged, unmerged = build(r)
    x = torch.randint(0, 256, (batch, SEQ), generator=torch.Generator().manual_seed(batch)).to(device)
    s = interleaved_samples({"base": forward_fn(base, x), "merged": forward_fn(merged, x),
                             "unmerged": forward_fn(unmerged, x)}, rounds=rounds, warmup=1)
    return {**{k: statistics.median(v) for k, v in s.items()},
            "merged_ratio": paired_ratio(s, "merged", "base"), "unmerged_ratio": paired_ratio(s, "unmerged", "base"),
            "flop_overhead": linear_flops(unmerged, batch, SEQ) / linear_flops(base, batch, SEQ) - 1}

print(sorted(measure_latency(4, 1, rounds=1)))

# %% tags=["nbval-skip"]
import ipywidgets as W

rank = W.SelectionSlider(options=[1, 2, 4, 8, 16, 32, 64, 128], value=16, description="rank r")
batch_size = W.SelectionSlider(options=[1, 2, 4, 8, 16, 32, 64], value=8, description="batch")
info, plot = W.HTML(), W.Output()

def redraw(_=None):
    m = measure_latency(rank.value, batch_size.value)
    info.value = (f"unmerged / base <b>{m['unmerged_ratio']:.3f}</b>, merged / base "
                  f"<b>{m['merged_ratio']:.3f}</b>, FLOP overhead {m['flop_overhead']:.2%}")
    with plot:
        plot.clear_output(wait=True)
        fig, ax = plt.subplots(figsize=(6, 2.6))
        ax.bar(["base", "merged", "unmerged"], [m[k] * 1e3 for k in ("base", "merged", "unmerged")],
               color=["#4c72b0", "#55a868", "#c44e52"])
        ax.set_ylabel("ms per forward")
        plt.show()

rank.observe(redraw, names="value"); batch_size.observe(redraw, names="value")
display(W.VBox([W.HBox([rank, batch_size]), info, plot])); redraw()

# %% [markdown]
# ## Takeaways for the interview
#
# - Merged LoRA has exactly the base model's shapes and FLOPs, so it has the base model's latency; measured here
#   within noise.
# - Unmerged LoRA adds $2r/d$ of the FLOPs of each adapted square layer (here 0.5% to 8% of the model's linear
#   FLOPs for $r$ from 4 to 64), but the extra work comes as small separate operations with fixed costs, so at
#   small ranks the measured overhead is larger than the FLOP share.
# - Merge when one adapter serves all traffic; keep adapters separate when requests need different adapters,
#   and batch across them with a serving system built for it (S-LoRA, up to 4x PEFT's throughput).
#
# **Follow-up questions to expect**
# - *What does switching adapters cost on a merged model?* Unmerge and merge: one $d \times r \times k$ product per
#   layer, and fp16 rounding accumulates if done repeatedly; keeping a clean copy of $W_0$ avoids it.
# - *Can a merged adapter be quantized?* Yes, but merging into a 4-bit base means dequantize, add, requantize (notebook 05).
# - *Why not always use a small rank to cut the overhead?* Quality can drop; notebook 11 measures how low r can go.
