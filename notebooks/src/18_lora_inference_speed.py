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
# Hu et al. name both sides: "No Additional Inference Latency" is their §4.1, and §4.2 (limitations) says that
# with merged weights, batching inputs for different tasks in one forward pass is not straightforward. Serving many
# adapters unmerged over one base is what S-LoRA (Sheng et al. 2023, arXiv 2311.03285) is built for: adapters paged
# in and out of GPU memory and custom kernels for batches that mix adapters; its abstract reports up to 4 times the
# throughput of Hugging Face PEFT and of vLLM with naive LoRA support, and several orders of magnitude more adapters
# served.
#
# Below: FLOPs counted exactly from the model's layers; then latency measured for base, merged and unmerged models
# across rank and batch size, for the prefill of a prompt and for decoding one token per step with the KV cache;
# then one batch that mixes requests for four adapters.
#
# Every time is a ratio to the base model timed in alternation in the same process, reported as the median of the
# per-round ratios with its interquartile range (`peftlab.measure.time_ratios`); verdicts on times hold only when the
# whole interquartile range agrees with the claim, against margins declared in the cells before they run.

# %%
import copy
import statistics

import torch
import matplotlib.pyplot as plt
from peftlab import load_base, lora, scale
from peftlab.evidence import exact
from peftlab.explore.report import table, claim_check
from peftlab.measure import forward_fn, interleaved_samples, paired_ratio, time_ratios

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
# These two checks show that the merged model computes the same function as the unmerged one, with the base
# model's layers. That is why it *can* run as fast as the base; whether it does is a timing question, measured below.

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
# ## Latency of the prefill, measured
#
# For each batch size we time one forward pass (no gradients) of the base model, of the unmerged models at every
# rank and of the merged ones, all alternating round by round. A second copy of the base model runs alongside as a
# control: it computes exactly what the base does, so its spread shows the measurement noise on this machine. Times
# change from run to run, so these cells are not compared on re-execution.

# %% tags=["nbval-ignore-output"]
MERGED_MARGIN, UNMERGED_LIMIT = 0.03, 0.10  # declared before the run: merged within ±3%; unmerged under +10%
control = copy.deepcopy(base)
ratio = {}  # (batch, model) -> Ratio to base
for b in BATCHES:
    x = torch.randint(0, 256, (b, SEQ), generator=torch.Generator().manual_seed(b)).to(device)
    fns = {"base": forward_fn(base, x), "base (control copy)": forward_fn(control, x)}
    for r, (merged, unmerged) in models.items():
        fns[f"merged r={r}"], fns[f"unmerged r={r}"] = forward_fn(merged, x), forward_fn(unmerged, x)
    for name, rt in time_ratios(fns, "base", rounds=ROUNDS[b], warmup=1).items():
        ratio[b, name] = rt

rows = []
for b in BATCHES:
    rows.append((b, "base (control copy)", "-", str(ratio[b, "base (control copy)"]), "0.00%"))
    for kind in ("merged", "unmerged"):
        for r in RANKS:
            rows.append((b, kind, r, str(ratio[b, f"{kind} r={r}"]),
                         f"{flop_overhead[r]:.2%}" if kind == "unmerged" else "0.00%"))
display(table(rows, ["batch", "model", "r", "time / base: median (IQR, range, rounds)", "FLOP overhead"]))
merged_ok = [(b, r) for b in BATCHES for r in RANKS if ratio[b, f"merged r={r}"].within(1 - MERGED_MARGIN, 1 + MERGED_MARGIN)]
control_ok = [b for b in BATCHES if ratio[b, "base (control copy)"].within(1 - MERGED_MARGIN, 1 + MERGED_MARGIN)]
print(f"merged / base: interquartile range inside 1 ± {MERGED_MARGIN:.0%} at {len(merged_ok)} of "
      f"{len(BATCHES) * len(RANKS)} (batch, rank) settings; the control copy at {len(control_ok)} of {len(BATCHES)} batches")
print("unmerged r=16 / base, median: " + ", ".join(f"batch {b}: {ratio[b, 'unmerged r=16'].median - 1:+.1%}"
                                                  for b in BATCHES))

# %% tags=["nbval-ignore-output"]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
colors = dict(zip(BATCHES, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
for b in BATCHES:
    for kind, ls, shift in (("merged", "--", 0.94), ("unmerged", "-", 1.06)):
        rts = [ratio[b, f"{kind} r={r}"] for r in RANKS]
        axes[0].errorbar([r * shift for r in RANKS], [100 * (t.median - 1) for t in rts],
                         yerr=[[100 * (t.median - t.q1) for t in rts], [100 * (t.q3 - t.median) for t in rts]],
                         ls=ls, marker="o", color=colors[b], capsize=3, label=f"{kind}, batch {b}")
axes[0].plot(RANKS, [100 * flop_overhead[r] for r in RANKS], "k:", marker="s", label="FLOP overhead")
axes[0].axhspan(-100 * MERGED_MARGIN, 100 * MERGED_MARGIN, color="grey", alpha=0.2, label="±3% (declared)")
axes[0].set_xscale("log", base=2); axes[0].set_xticks(RANKS, [str(r) for r in RANKS])
axes[0].set_xlabel("rank r"); axes[0].set_ylabel("time over base (%), median and IQR"); axes[0].legend(fontsize=7, ncol=2)
width = 0.35
for i, kind in enumerate(("merged r=16", "unmerged r=16")):
    axes[1].bar([j + (i - 0.5) * width for j in range(len(BATCHES))], [ratio[b, kind].median for b in BATCHES],
                width=width, label=kind,
                yerr=[[ratio[b, kind].median - ratio[b, kind].q1 for b in BATCHES],
                      [ratio[b, kind].q3 - ratio[b, kind].median for b in BATCHES]], capsize=3)
axes[1].axhline(1.0, color="k", lw=0.8)
axes[1].set_xticks(range(len(BATCHES)), [f"batch {b}" for b in BATCHES])
axes[1].set_ylabel(f"time / base ({SEQ} tokens each)"); axes[1].legend(fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# Read the left plot against the grey band and the dotted FLOP line; the printed lines above say, for this run,
# where the merged models' spread lies. The same GEMMs run in the merged model, and peftlab's wrapper adds only one
# Python call per adapted layer that returns at once (`lora.unload` removes even that). Unmerged models cost more,
# and more with the rank; where they sit above the dotted line, the extra time is the price of launching small
# separate operations rather than of their FLOPs.
#
# ## Decoding: one token per step with the KV cache
#
# Generation after the prompt runs one token per step: every matmul has one row per sequence, and the fixed cost of
# each small operation weighs most. We time greedy decoding of 32 tokens after a 16-token prompt
# (`peftlab.model.generate`, KV cache on) for base, merged and unmerged at r=16.

# %% tags=["nbval-ignore-output"]
NEW_TOKENS, PROMPT = 32, 16
decode = {}
for b in (1, 8):
    prompt = torch.randint(0, 256, (b, PROMPT), generator=torch.Generator().manual_seed(b)).to(device)
    merged, unmerged = models[16]
    fns = {name: (lambda m=m: m.generate(prompt, NEW_TOKENS)) for name, m in
           (("base", base), ("merged r=16", merged), ("unmerged r=16", unmerged))}
    for m in (base, merged, unmerged):
        m.eval()
    decode[b] = time_ratios(fns, "base", rounds=12, warmup=1)
display(table([(b, name, str(rt)) for b, rts in decode.items() for name, rt in rts.items() if name != "base"],
              ["batch", "model", "decode time / base: median (IQR, range, rounds)"]))
print("unmerged r=16 / base: prefill batch 8 " f"{ratio[8, 'unmerged r=16'].median - 1:+.1%}, decoding batch 8 "
      f"{decode[8]['unmerged r=16'].median - 1:+.1%}, decoding batch 1 {decode[1]['unmerged r=16'].median - 1:+.1%} (medians)")

# %% [markdown]
# Decoding is where an unmerged adapter's extra small operations cost most: each step moves a handful of rows, so
# the fixed cost of the two thin matmuls, the scale and the add is not spread over many tokens. The printed line
# puts this run's prefill and decoding overheads side by side.
#
# ## One batch, four adapters
#
# A server with one base model and many adapters receives requests for different adapters at once. Three ways to run
# a batch of 8 requests, 2 for each of 4 adapters (r=16 on q, v):
# - **mixed batch, unmerged**: one forward pass; each adapted layer gathers every request's $A$ and $B$ and runs two
#   batched matmuls (`lora.per_request`, the idea behind S-LoRA's kernels, without their custom CUDA);
# - **one adapter at a time, unmerged**: four forward passes of 2 requests each;
# - **swap merged weights**: for each adapter, merge it into the base, run its 2 requests, unmerge: four merges,
#   four unmerges, four forward passes.
# The reference is the base model on the whole batch, the floor none of them can beat.

# %%
ADAPTERS = ["a", "b", "c", "d"]
served = lora.add(copy.deepcopy(base), r=16, alpha=32, targets=TARGETS, name=ADAPTERS[0])
for name in ADAPTERS[1:]:
    lora.add(served, r=16, alpha=32, targets=TARGETS, name=name)
lora.randomize_B(served, std=0.02)
served.eval()
requests = torch.randint(0, 256, (8, SEQ), generator=torch.Generator().manual_seed(8)).to(device)
owner = [ADAPTERS[i % 4] for i in range(8)]  # request i asks for adapter owner[i]
rows_of = {name: [i for i, o in enumerate(owner) if o == name] for name in ADAPTERS}


@torch.no_grad()
def mixed_batch():
    with lora.per_request(served, owner):
        return served(requests)


@torch.no_grad()
def one_adapter_at_a_time():
    out = torch.empty(8, SEQ, base.config.vocab_size, device=device)
    for name, rows in rows_of.items():
        lora.set_active(served, name)
        out[rows] = served(requests[rows])
    return out


@torch.no_grad()
def swap_merged():
    out = torch.empty(8, SEQ, base.config.vocab_size, device=device)
    for name, rows in rows_of.items():
        lora.set_active(served, name)
        lora.merge(served)
        out[rows] = served(requests[rows])
        lora.unmerge(served)
    return out


reference = one_adapter_at_a_time()
for fn in (mixed_batch, swap_merged):
    print(f"{fn.__name__}: the same logits as one adapter at a time (max |difference| below 1e-4): "
          f"{(fn() - reference).abs().max().item() < 1e-4}")

# %% tags=["nbval-ignore-output"]
serving = time_ratios({"base, whole batch": forward_fn(base, requests), "mixed batch": mixed_batch,
                       "one adapter at a time": one_adapter_at_a_time, "swap merged weights": swap_merged},
                      "base, whole batch", rounds=15, warmup=1)
display(table([(name, str(rt)) for name, rt in serving.items() if name != "base, whole batch"],
              ["8 requests for 4 adapters", "time / base on the whole batch: median (IQR, range, rounds)"]))
fastest = min((n for n in serving if n != "base, whole batch"), key=lambda n: serving[n].median)
print(f"fastest here (median): {fastest}")

# %% [markdown]
# Swapping merged weights pays for four merges and four unmerges per batch, each a $d \times r \times k$ product per
# adapted layer, and runs four small forward passes; the mixed batch runs one forward pass at full batch size and pays
# only the gathered thin matmuls. The table above gives this run's ordering and its spread. On a GPU the gap is
# larger, since a small forward pass leaves most of the device idle (S-LoRA's measurements); notebook 20's serving
# question builds on this.
#
# ## Claim check
#
# The first cell rests on what cannot change between runs (functions, shapes and FLOPs); the measured verdicts follow
# in a cell of their own, judged on the interquartile range against the margins declared above.

# %%
display(claim_check([
    ("merged computes the base model's function shape for shape", "W0 + (alpha/r) B A has W0's shape (Hu et al. 2021, §4.1)",
     f"merged FLOPs = base FLOPs at r={', '.join(map(str, RANKS))}; unloaded layers identical: "
     f"{shapes(unloaded) == shapes(base)}; margin 0 FLOPs",
     exact(max(linear_flops(m, 1, SEQ) for m, _ in models.values()), base_flops, claim="equivalent",
           margin=0.5).verdict if shapes(unloaded) == shapes(base) else "does not hold"),
    ("unmerged: small overhead in FLOPs", "two thin matmuls per adapted layer: 2 b s r (k + d) FLOPs",
     "FLOP overhead " + ", ".join(f"r={r}: {flop_overhead[r]:.2%}" for r in RANKS) + f"; under {UNMERGED_LIMIT:.0%}",
     exact(max(flop_overhead.values()), UNMERGED_LIMIT, claim="less", margin=0).verdict),
]))

# %% tags=["nbval-ignore-output"]
def all_agree(verdicts):
    verdicts = set(verdicts)
    return verdicts.pop() if len(verdicts) == 1 else "inconclusive"


display(claim_check([
    ("merged: zero extra latency (prefill)", "Hu et al. 2021, §4.1",
     f"merged / base IQR inside 1 ± {MERGED_MARGIN:.0%} at {len(merged_ok)} of {len(BATCHES) * len(RANKS)} settings",
     all_agree(ratio[b, f"merged r={r}"].verdict("equivalent", MERGED_MARGIN) for b in BATCHES for r in RANKS)),
    ("unmerged: small overhead (prefill, r=16)", f"FLOP overhead at r=16: {flop_overhead[16]:.2%}",
     "time / base: " + ", ".join(f"batch {b}: {ratio[b, 'unmerged r=16']}" for b in BATCHES) + f"; under +{UNMERGED_LIMIT:.0%}",
     all_agree(ratio[b, "unmerged r=16"].verdict("below", UNMERGED_LIMIT) for b in BATCHES)),
    ("unmerged: small overhead (decoding, r=16)", "the same two thin matmuls, one token per step",
     "time / base: " + ", ".join(f"batch {b}: {decode[b]['unmerged r=16']}" for b in decode) + f"; under +{UNMERGED_LIMIT:.0%}",
     all_agree(decode[b]["unmerged r=16"].verdict("below", UNMERGED_LIMIT) for b in decode)),
    ("a mixed batch serves many adapters faster than swapping merged weights", "Hu et al. §4.2; S-LoRA (arXiv 2311.03285)",
     f"mixed: {serving['mixed batch']}; swap: {serving['swap merged weights']} (times / base); margin 0",
     "holds" if serving["mixed batch"].q3 < serving["swap merged weights"].q1 else
     "does not hold" if serving["mixed batch"].q1 > serving["swap merged weights"].q3 else "inconclusive"),
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

# %% [markdown]
# ![The explorer below as it first appears, at its default settings](figures/18_explorer.png)
#
# *The explorer below as it first appears, photographed in JupyterLab by `scripts/explorer_pictures.py`; run
# the cell for the live one.*

# %% tags=["explorer", "nbval-ignore-output"]
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
# - Merged LoRA has exactly the base model's shapes and FLOPs, so it can have the base model's latency; the timing
#   cells above judge it on this machine's spread, against a ±3% margin.
# - Unmerged LoRA adds $2r/d$ of the FLOPs of each adapted square layer (here 0.5% to 8% of the model's linear
#   FLOPs for $r$ from 4 to 64), but the extra work comes as small separate operations with fixed costs, so at
#   small ranks the measured overhead is larger than the FLOP share.
# - Unmerged overhead is largest when decoding one token per step, where each small operation's fixed cost is not
#   spread over many tokens.
# - Merge when one adapter serves all traffic; keep adapters separate when requests need different adapters, and
#   batch across them (gather each request's A and B, batched matmuls), as serving systems built for it do (S-LoRA:
#   up to 4x the throughput of PEFT and of vLLM's naive LoRA support, per its abstract).
#
# **Follow-up questions to expect**
# - *What does switching adapters cost on a merged model?* Unmerge and merge: one $d \times r \times k$ product per
#   layer, and fp16 rounding accumulates if done repeatedly; keeping a clean copy of $W_0$ avoids it.
# - *Can a merged adapter be quantized?* Yes, but merging into a 4-bit base means dequantize, add, requantize (notebook 05).
# - *Why not always use a small rank to cut the overhead?* Quality can drop; notebook 11 measures how low r can go.
