# %% [markdown]
# # 14 · What is the memory bottleneck in fine-tuning?
#
# **The interview question.** *"When you fine-tune an LLM, where does the GPU memory go? What is the bottleneck?"*
#
# **The short answer an interviewer expects**
# - Four things live in memory during training: weights, gradients, optimizer states and activations.
# - With Adam, the optimizer states (two per parameter) are the biggest part; the weights are the smallest.
# - Activations grow with batch size and sequence length; gradient checkpointing trades them for compute.
#
# ## The precise answer
#
# Three of the four categories are a fixed number of bytes per parameter $N$; the fourth is not:
#
# | category | fp32 + Adam | mixed precision + Adam (ZeRO, arXiv 1910.02054) | LoRA on a 16-bit base | QLoRA (arXiv 2305.14314) |
# |---|---|---|---|---|
# | weights | 4 B × N | 2 B × N | 2 B × N + adapter | ≈ 0.516 B × N (NF4, double-quantized) + adapter |
# | gradients | 4 B × N | 2 B × N | adapter only | adapter only |
# | optimizer | 8 B × N | 12 B × N (fp32 master + 2 moments) | adapter only | adapter only |
# | activations | ∝ batch × seq × layers | same, 16-bit | a little less (frozen layers keep no inputs) | LoRA's: a frozen 4-bit layer keeps no input (bitsandbytes' `MatMul4Bit` saves only the packed weight) |
#
# For activations, Korthikanti et al. (2022, arXiv 2205.05198, section 4.1) count what one GPT layer keeps for the
# backward pass in 16-bit: $s\,b\,h\,(34 + 5\,a\,s/h)$ bytes for sequence length $s$, batch $b$, hidden size $h$ and
# $a$ heads. The $5as^2b$ part is the attention matrix (softmax output, dropout mask, dropout output). With gradient
# checkpointing (Chen et al. 2016, arXiv 1604.06174) a layer keeps only its input, $2sbh$ bytes, and recomputes
# the rest in the backward pass.
#
# What the short answer leaves out:
# - "Optimizer states are the bottleneck" is true only for **short batches**. Activations grow linearly with
#   batch × sequence length (quadratically in $s$ without a fused attention kernel) while the optimizer does not, so past a
#   crossover of a few hundred tokens on our model, and of several thousand on a 7B model, activations dominate.
# - "Weights are the smallest" holds for full fine-tuning; with LoRA or QLoRA the **frozen weights** become the
#   largest fixed cost, and there is no gradient or Adam state left to cut.
# - The 34 in the formula is for a GPT layer with GELU and dropout. Our model (and Llama) uses SwiGLU, RMSNorm, no
#   dropout, and an attention kernel that never stores the $s \times s$ matrix. `peftlab.calculator` counts the tensors such a layer saves
#   instead, and we check both against the measurement.
#
# - The four categories are an **accounting**, and their sum is not what a step needs: they never all coexist
#   (activations are freed while gradients appear; Adam's state is created by the first step), and backward
#   allocates temporaries that none of them holds. What a step needs is its **peak**, measured below on the CPU from
#   the allocator's own events (`torch.profiler` with `profile_memory=True`), with the categories live at that
#   instant.
#
# Below: the accounted breakdown and the measured peak on peftlab's base model across batch and sequence length,
# what is live at the peak, the crossover, the formula against measurement, and the calculator for 7B-and-larger
# models against published figures.

# %%
import copy
import torch
import matplotlib.pyplot as plt
from peftlab import load_base, count_parameters, memory_report, lora, calculator, scale
from peftlab.evidence import exact
from peftlab.explore.plots import stacked_bars
from peftlab.explore.report import table, claim_check, mib

torch.manual_seed(0)
GPU = scale.gpu()  # PEFTLAB_SCALE=gpu opts in to the larger setting; unset: CPU, on any machine
device = "cuda" if GPU else "cpu"
# a larger sweep where a GPU is present (our model's context is 256 tokens)
BATCHES = [1, 2, 4, 8, 16, 32, 64] if GPU else [1, 2, 4, 8, 16]
SEQS = [16, 32, 64, 128, 256]
SEQ, BATCH = 128, 4

base = load_base(device=device)
arch = calculator.from_config(base.config)
N = count_parameters(base).total
print(f"base model: {N:,} parameters; layers {arch.layers}, hidden {arch.hidden}, heads {arch.heads}, "
      f"SwiGLU width {arch.intermediate}, vocabulary {arch.vocab}")


def measure(b, s, method="full", checkpointing=False, step="later", profile=False):
    """One real training step (fp32, AdamW) of a fresh copy: bytes by category from memory_report, and with
    `profile` the measured peak. step="later": Adam's state exists before the step, as in the middle of training."""
    model = copy.deepcopy(base)
    if method == "lora":
        model = lora.add(model, r=8, targets="all-linear")
    model.set_gradient_checkpointing(checkpointing)
    batch = torch.randint(0, 256, (b, s), generator=torch.Generator().manual_seed(0))
    return memory_report(model, batch, step=step, profile=profile)

# %% [markdown]
# ## Run it: the accounted breakdown and the measured peak across batch size and sequence length
#
# Full fine-tuning in fp32 with AdamW, one real training step per setting (a step after the first, so Adam's state
# exists), every byte of the four categories counted from the tensors (`memory_report`: parameters, `.grad`s, the
# optimizer's state tensors, and every tensor autograd saved). The batch sweep also measures the step's peak
# (`profile=True`: one profiled step).

# %%
CATS = ("weights", "gradients", "optimizer", "activations")
by_batch = {b: measure(b, SEQ, profile=True) for b in BATCHES}
by_seq = {s: measure(BATCH, s) for s in SEQS}


def share_rows(results, key):
    return [(f"{key}={k}", *(mib(getattr(r, c)) for c in CATS), mib(r.total),
             mib(r.peak) if r.peak else "not profiled", f"{r.total / r.peak:.2f}" if r.peak else "",
             f"{r.activations / r.total:.1%}") for k, r in results.items()]


display(table(share_rows(by_batch, "batch") + share_rows(by_seq, "seq"),
              ["setting", *CATS, "accounted total", "measured peak", "accounted / peak", "activations share"]))

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
stacked_bars(axes[0], [r.as_dict() for r in by_batch.values()], [str(b) for b in by_batch])
axes[0].plot(range(len(by_batch)), [r.peak / 2**20 for r in by_batch.values()], "k_", ms=28, mew=2,
             label="measured peak")
axes[0].set_xlabel(f"batch size (seq {SEQ})"); axes[0].set_title("accounted (bars) and measured peak (line)")
axes[0].legend(fontsize=8)
stacked_bars(axes[1], [r.as_dict() for r in by_seq.values()], [str(s) for s in by_seq])
axes[1].set_xlabel(f"sequence length (batch {BATCH})"); axes[1].set_title("accounted, full fine-tuning, fp32 + AdamW")
fig.tight_layout()
plt.show()

# %% [markdown]
# The three bars at the bottom never move: weights, gradients and Adam's moments are fixed by the parameter count.
# Only the activations grow, and they grow in proportion to batch × sequence length (on this CPU kernel there is no
# $s^2$ term: PyTorch's scaled-dot-product attention keeps only $q, k, v$, the output and a log-sum-exp per row).
# The black line is the measured peak: below the stacked sum, because the categories never all coexist.
#
# ## What is live at the peak
#
# The profiler's memory timeline says which category each live byte belongs to at the peak. Backward's own
# temporaries (autograd's buffers, and with checkpointing the recomputed block's activations and their gradients)
# are there; with a tiny batch the peak moves into Adam's first step, which holds the new state and its own
# temporaries on top of the gradients.

# %%
AT_PEAK = ("weights", "gradients", "optimizer", "activations", "backward temporaries", "optimizer step temporaries")
peak_cases = {
    "full, first step": measure(8, SEQ, step="first", profile=True),
    "full, later step": measure(8, SEQ, profile=True),
    "full + checkpointing": measure(8, SEQ, checkpointing=True, profile=True),
    "LoRA all-linear": measure(8, SEQ, "lora", profile=True),
    "LoRA + checkpointing": measure(8, SEQ, "lora", checkpointing=True, profile=True),
    "full, 1 x 16 tokens, first step": measure(1, 16, step="first", profile=True),
}
display(table([(name, *(mib(r.at_peak[c]) for c in AT_PEAK), mib(r.at_peak_attributed), mib(r.peak), r.peak_phase,
                mib(r.total), f"{r.total / r.peak:.2f}") for name, r in peak_cases.items()],
              ["8 x 128 unless said", *(f"at peak: {c}" for c in AT_PEAK), "at peak: sum", "measured peak",
               "peak in", "accounted total", "accounted / peak"]))
worst = min(peak_cases.values(), key=lambda r: r.at_peak_attributed / r.peak)
print(f"the categories at the peak explain {worst.at_peak_attributed / worst.peak:.1%} of the measured peak or more "
      f"in every row (the rest: allocations the profiler leaves uncategorized)")
print(f"accounted total / measured peak runs from {min(r.total / r.peak for r in peak_cases.values()):.2f} to "
      f"{max(r.total / r.peak for r in peak_cases.values()):.2f}")

# %% [markdown]
# Read the last column: the accounted total overstates full fine-tuning's first step (Adam's state does not exist
# yet during backward, and the activations are mostly freed before it is created) and understates checkpointing,
# whose recomputed block and gradient temporaries no category counts. The `python -m peftlab.bench memory` table
# repeats this for every method, with and without checkpointing, on the first and on a later step.
#
# ## Where activations overtake the optimizer state
#
# From the measurement: activations per token are the slope of the sweep; the crossover is the number of tokens
# per step (batch × sequence) at which they equal Adam's $8N$ bytes. From the formula: the same slope from
# `calculator.llama_activation_bytes`, and from Korthikanti's GPT count.

# %%
tokens = {b * SEQ: r.activations for b, r in by_batch.items()}
(t0, a0), (t1, a1) = list(tokens.items())[0], list(tokens.items())[-1]
per_token = (a1 - a0) / (t1 - t0)  # bytes per token, measured
optimizer_bytes = by_batch[1].optimizer
cross_measured = optimizer_bytes / per_token
per_token_formula = calculator.llama_activation_bytes(arch, 1, SEQ, element_bytes=4) / SEQ
cross_formula = optimizer_bytes / per_token_formula
korth_per_token = 2 * arch.layers * calculator.activation_bytes_per_layer(SEQ, 1, arch.hidden, arch.heads) / SEQ
first = next((b for b, r in by_batch.items() if r.activations > r.optimizer), None)
print(f"optimizer state (AdamW, 8 B/param): {optimizer_bytes:,} B")
print(f"activations per token, measured: {per_token:,.0f} B; peftlab's Llama count: {per_token_formula:,.0f} B; "
      f"Korthikanti (x2 for fp32, seq {SEQ}): {korth_per_token:,.0f} B")
print(f"crossover: {cross_measured:,.0f} tokens per step measured, {cross_formula:,.0f} from the Llama count, "
      f"{optimizer_bytes / korth_per_token:,.0f} from Korthikanti's formula")
print(f"first batch size (seq {SEQ}) where activations > optimizer state: {first}")

# %%
points = sorted({**{b * SEQ: r.activations for b, r in by_batch.items()},
                 **{BATCH * s: r.activations for s, r in by_seq.items()}}.items())
fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.plot([t for t, _ in points], [a / 2**20 for _, a in points], "o", color="#c44e52", label="activations, measured")
xs = [points[0][0], points[-1][0]]
ax.plot(xs, [x * per_token_formula / 2**20 for x in xs], "-", color="#c44e52", lw=1, label="Llama count")
ax.plot(xs, [x * korth_per_token / 2**20 for x in xs], "--", color="grey", lw=1, label=f"Korthikanti (seq {SEQ})")
ax.axhline(optimizer_bytes / 2**20, color="#55a868", label="optimizer state (AdamW)")
ax.axvline(cross_measured, color="black", lw=0.8, ls=":")
ax.set_xscale("log"); ax.set_yscale("log")
ax.set_xlabel("tokens per step (batch x sequence)"); ax.set_ylabel("MiB")
ax.set_title(f"activations overtake Adam's state at ~{cross_measured:,.0f} tokens")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# On our 3.3M-parameter model the crossover is a few hundred tokens: between two and three sequences of 128
# tokens. The same arithmetic for a 7B model in mixed precision (12 B/param of optimizer state, 16-bit
# activations):

# %%
rows = []
for name, per_param in (("llama-2-7b", 12), ("llama-2-70b", 12)):
    a = calculator.ARCHITECTURES[name]
    opt = per_param * a.parameters
    for attention in ("flash", "eager"):
        per_tok = calculator.llama_activation_bytes(name, 1, 2048, attention=attention) / 2048
        rows.append((name, attention, f"{opt / 1e9:,.0f} GB", f"{per_tok / 1e6:.2f} MB",
                     f"{opt / per_tok:,.0f}", f"{opt / per_tok / 2048:.1f}"))
display(table(rows, ["model", "attention", "optimizer state", "activations / token (seq 2048)",
                     "crossover (tokens)", "= sequences of 2048"]))

# %% [markdown]
# A 7B model reaches the crossover at a handful of 2048-token sequences per GPU, which is why long-context
# fine-tuning runs out of memory on activations even when the optimizer state is sharded, and why gradient
# checkpointing is on in every published recipe below.
#
# ## The formula against the measurement

# %%
rows, ratios = [], {}
for b, s in ((1, 64), (4, 128), (8, 256) if not GPU else (32, 256)):
    measured = measure(b, s).activations
    korth = 2 * arch.layers * calculator.activation_bytes_per_layer(s, b, arch.hidden, arch.heads)  # x2: fp32
    ours = calculator.llama_activation_bytes(arch, b, s, element_bytes=4)
    ratios[(b, s)] = (korth / measured, ours / measured)
    rows.append((f"{b} x {s}", mib(measured), mib(korth), f"{korth / measured:.2f}", mib(ours), f"{ours / measured:.3f}"))
lora_m = measure(4, 128, "lora").activations
lora_f = calculator.llama_activation_bytes(arch, 4, 128, "lora", element_bytes=4, lora_targets="all-linear")
ckpt_m = measure(4, 128, checkpointing=True).activations
ckpt_f = calculator.llama_activation_bytes(arch, 4, 128, gradient_checkpointing=True, element_bytes=4,
                                           include_recompute=False)
rows.append(("4 x 128, LoRA all-linear", mib(lora_m), "", "", mib(lora_f), f"{lora_f / lora_m:.3f}"))
rows.append(("4 x 128, checkpointing", mib(ckpt_m), mib(2 * arch.layers * calculator.activation_bytes_per_layer(128, 4, arch.hidden, arch.heads, True)), "",
             mib(ckpt_f), f"{ckpt_f / ckpt_m:.3f}"))
display(table(rows, ["batch x seq", "measured", "Korthikanti (fp32)", "ratio", "Llama count", "ratio"]))

# %% [markdown]
# Korthikanti's count is for a different layer: a GELU MLP of width $4h$ (we have SwiGLU with three matrices of
# width $f = 688 \approx 2.7h$), dropout masks (we have none) and the stored $a \times s \times s$ attention matrix
# (the kernel here keeps none), in 16-bit tensors (ours are fp32, hence the ×2). At short sequences its linear part
# happens to land near ours; its $s^2$ term makes it overestimate more and more as the sequence grows.
# The Llama count (module docstring of `peftlab.calculator`) lists the saved tensors of our layer, so it matches
# the measurement to within a few tenths of a percent for full fine-tuning. For LoRA the frozen layers keep fewer
# inputs, and the count is a few percent short; with checkpointing, `memory_report` sees only the layer inputs
# kept in the forward pass (the one layer recomputed during backward is transient and is left out here; the peak
# table above shows it, as backward temporaries).
#
# ## The calculator for a 7B model
#
# Llama 2 7B, batch 4 × 2048 tokens, mixed precision: full fine-tuning (ZeRO's 16 B/param), LoRA r=8 on q, v
# (fp32 adapters on a 16-bit base), QLoRA (the same on an NF4 base), each with and without gradient checkpointing.

# %%
settings = dict(batch_size=4, seq_len=2048, precision="mixed")
estimates = {(m, ck): calculator.estimate("llama-2-7b", m, gradient_checkpointing=ck, **settings)
             for m in ("full", "lora", "qlora") for ck in (False, True)}
rows = [(m, "yes" if ck else "no", *(f"{getattr(e, c) / 1e9:.2f}" for c in CATS), f"{e.total / 1e9:.1f}")
        for (m, ck), e in estimates.items()]
display(table(rows, ["method", "checkpointing", *(f"{c} (GB)" for c in CATS), "total (GB)"]))

fig, ax = plt.subplots(figsize=(8, 3.6))
stacked_bars(ax, [e.as_dict() for e in estimates.values()],
             [f"{m}\n{'ckpt' if ck else 'no ckpt'}" for m, ck in estimates], unit="GB")
ax.set_title("Llama 2 7B, batch 4 x 2048, calculated")
ax.legend(loc="upper right", fontsize=8)
plt.show()

# %% [markdown]
# Full fine-tuning needs well over 100 GB before a single activation; checkpointing cuts its activations by an
# order of magnitude, but the model states stay. For LoRA and QLoRA the picture inverts: the model states shrink to
# the frozen weights, and without checkpointing the activations are the largest part. QLoRA's activations equal
# LoRA's: a frozen 4-bit layer needs no input for a weight gradient, and bitsandbytes' 4-bit matmul (`MatMul4Bit`,
# 0.45 to 0.50.2) keeps only the packed weight for backward (`ctx.tensors = (None, B)`). Turning checkpointing on is
# what brings QLoRA on a 7B model into a consumer GPU. These are calculated, not measured: a training peak would
# add backward's temporaries, as the table of our own model shows.
#
# ## The logits at a large vocabulary
#
# The output head's logits and their log-softmax are kept in fp32 for the loss, one row per token of the vocabulary.
# At Llama 3's 128k vocabulary that row is four times Llama 2's:

# %%
rows = []
for name in ("llama-2-7b", "llama-3.1-8b"):
    a = calculator.ARCHITECTURES[name]
    logits = a.vocab * 4 * 4 * 2048  # fp32 log-softmax of the logits, batch 4 x 2048
    lora_states = calculator.estimate(name, "lora", batch_size=4, seq_len=2048).model_states
    rows.append((name, f"{a.vocab:,}", f"{logits / 1e9:.2f} GB", f"{lora_states / 1e9:.1f} GB",
                 f"{logits / lora_states:.0%}"))
display(table(rows, ["model", "vocabulary", "logits kept for the loss (fp32, 4 x 2048)", "LoRA model states",
                     "logits / model states"]))

# %% [markdown]
# This is why recipes such as torchtune's compute the cross-entropy in chunks: the logits of a 128k vocabulary are a
# large part of a LoRA step on an 8B model, and they do not shrink with LoRA or QLoRA.
#
# ## Against the published figures
#
# Each row runs `calculator.estimate` with the setup the source describes (precision, optimizer, rank, targets,
# batch, sequence, checkpointing) and compares the quantity the source reports. The deviation is reported, not
# judged: each source leaves out part of its setup (kernels, transient buffers, allocator overhead), and the
# reason is in the last column (`calculator.PUBLISHED`).

# %%
def fmt(row, value):
    unit = {"GB": 1e9, "TB": 1e12, "GiB": 2**30, "B/param": 1}[row.unit]
    return f"{value / unit:,.2f} {row.unit}"

rows = [(p.source, p.setup, fmt(p, p.figure), fmt(p, p.estimated()), f"{p.deviation():+.1%}", p.note)
        for p in calculator.PUBLISHED]
display(table(rows, ["source", "setup", "published", "calculated", "deviation", "why they differ"]))
deviations = [abs(p.deviation()) for p in calculator.PUBLISHED]
print(f"{len(deviations)} published figures; deviations from {min(deviations):.1%} to {max(deviations):.1%} in size")

# %% [markdown]
# ## Claim check
#
# Every quantity here is a byte count of one deterministic step: a second seed gives the same number, so each
# verdict is the measured value against a margin declared in the row (`peftlab.evidence.exact`). "The largest
# part" is judged on what is live at the measured peak of a step after the first, as in the middle of training.

# %%
def largest_other(r, category):
    return max(v for c, v in r.at_peak.items() if c not in (category, "unattributed"))


short, long_ = by_batch[BATCHES[0]], by_batch[BATCHES[-1]]
korth_ratio, ours_ratio = ratios[(4, 128)]
batch_growth = by_batch[BATCHES[-1]].activations / by_batch[BATCHES[0]].activations / (BATCHES[-1] / BATCHES[0])
seq_growth = by_seq[SEQS[-1]].activations / by_seq[SEQS[0]].activations / (SEQS[-1] / SEQS[0])
full_first, lora_ckpt = peak_cases["full, first step"], peak_cases["LoRA + checkpointing"]
MIB = 2**20
display(claim_check([
    (f"optimizer states are the bottleneck ({BATCHES[0]} x {SEQ} tokens per step)",
     "Adam: 2 fp32 moments per parameter (8 of 16 B/param in fp32)",
     f"at the peak: optimizer {mib(short.at_peak['optimizer'])}, largest other category "
     f"{mib(largest_other(short, 'optimizer'))}; larger by more than 0",
     exact(short.at_peak["optimizer"] / MIB, largest_other(short, "optimizer") / MIB, margin=0).verdict),
    (f"optimizer states are the bottleneck ({BATCHES[-1]} x {SEQ} tokens per step)", "(the same, a longer step)",
     f"at the peak: optimizer {mib(long_.at_peak['optimizer'])}, largest other category "
     f"{mib(largest_other(long_, 'optimizer'))}; larger by more than 0",
     exact(long_.at_peak["optimizer"] / MIB, largest_other(long_, "optimizer") / MIB, margin=0).verdict),
    ("the four categories add up to what a step needs", "the usual accounting (weights + gradients + optimizer + activations)",
     f"accounted / measured peak: {full_first.total / full_first.peak:.2f} (full, first step), "
     f"{lora_ckpt.total / lora_ckpt.peak:.2f} (LoRA + checkpointing); equal within ±10%",
     "does not hold" if "does not hold" in {exact(r.total / r.peak, 1.0, claim="equivalent", margin=0.10).verdict
                                            for r in (full_first, lora_ckpt)} else "holds"),
    ("activations ~ s b h (34 + 5 a s / h) per layer", "Korthikanti et al. 2022, 16-bit, GELU, dropout",
     f"formula / measured = {korth_ratio:.2f} (fp32, 4 x 128); equal within ±20%",
     exact(korth_ratio, 1.0, claim="equivalent", margin=0.20).verdict),
    ("activations grow linearly with batch", "Korthikanti et al. 2022: s b h (...)",
     f"x{BATCHES[-1] // BATCHES[0]} batch: x{batch_growth * BATCHES[-1] / BATCHES[0]:.2f} activations "
     f"(per token: {batch_growth:.3f} of the smallest batch's); equal within ±5%",
     exact(batch_growth, 1.0, claim="equivalent", margin=0.05).verdict),
    ("activations grow linearly with sequence length (fused attention)", "Dao et al. 2022: no s x s matrix is stored",
     f"x{SEQS[-1] // SEQS[0]} sequence: x{seq_growth * SEQS[-1] / SEQS[0]:.2f} activations "
     f"(per token: {seq_growth:.3f} of the shortest's); equal within ±5%",
     exact(seq_growth, 1.0, claim="equivalent", margin=0.05).verdict),
]))

# %% [markdown]
# Context from the papers' own numbers, not checks: ZeRO's 16 B/param is 2 + 2 + 12 by definition, and our fp32 step
# counts 4 + 4 + 8 to the byte; Hu et al.'s 350 GB for GPT-3 175B with LoRA is 2 B × 175B of frozen 16-bit weights;
# Dettmers et al.'s 41 GB for Guanaco 65B is the model's footprint (4-bit weights and adapters), not a training peak.

# %% [markdown]
# ## Explore: method, optimizer, batch and precision against memory
#
# Each change runs one real training step on a fresh copy of the base model (left) and recalculates a large
# published model at the same setting for all three methods (right). Switch the optimizer to SGD and watch the
# optimizer bar vanish; switch the method to LoRA and watch gradients and optimizer state vanish while the
# activations stay; raise the batch until the red bar dominates, then turn on checkpointing.

# %% [markdown]
# ![The explorer below as it first appears, at its default settings](figures/14_explorer.png)
#
# *The explorer below as it first appears, photographed in JupyterLab by `scripts/explorer_pictures.py`; run
# the cell for the live one.*

# %% tags=["explorer", "nbval-ignore-output"]
from peftlab.explore.memory import MemoryExplorer
MemoryExplorer(load_base(device=device)).show()

# %% [markdown]
# ## Takeaways for the interview
#
# - Four categories: weights, gradients, optimizer state (three fixed per parameter: 16 B/param with Adam, in fp32
#   and in standard mixed precision) and activations (growing with batch × sequence length × depth). Their sum is an
#   accounting; what a step needs is its measured peak, which backward's temporaries raise and the categories'
#   different lifetimes lower.
# - Which one is the bottleneck depends on the tokens per step: optimizer state below the crossover, activations
#   above it. Measured here: a few hundred tokens; for a 7B model, a handful of 2048-token sequences.
# - PEFT removes gradients and optimizer state for the frozen base, not its activations; QLoRA then shrinks the
#   frozen weights to about half a byte per parameter. What remains is activations, which checkpointing cuts to one
#   tensor per layer.
# - Korthikanti's $sbh(34 + 5as/h)$ is for a GPT layer with dropout and no fused attention; count the saved tensors of
#   your own layer instead (and measure).
#
# **Follow-up questions to expect**
# - *Why does mixed precision not halve the memory?* The model states do not shrink: ZeRO's mixed-precision Adam keeps
#   16-bit weights and gradients plus fp32 master weights and two fp32 moments, 2 + 2 + 12 = 16 B/param, the same as
#   fp32's 4 + 4 + 8. PyTorch's autocast keeps fp32 weights and gradients (4 + 4 + 8) and makes 16-bit copies per
#   op. The saving is in the activations, stored in 16 bits.
# - *How does FlashAttention change the picture?* It removes the $a s^2 b$ term; the activations become linear in $s$.
# - *Your LoRA run still runs out of memory; why?* The activations: reduce the micro-batch, turn on checkpointing,
#   or shorten sequences (notebook 15 measures checkpointing's cost).
# - *How would you fit 70B?* QLoRA + checkpointing + paged optimizer on one 80 GB GPU, or shard model states with
#   ZeRO-3/FSDP across GPUs.
