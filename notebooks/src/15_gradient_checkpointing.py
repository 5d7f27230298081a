# %% [markdown]
# # 15 · Gradient checkpointing: how much memory does it save, and what does it cost?
#
# **The interview question.** *"What is gradient checkpointing? How much memory does it save, and what do you pay
# for it?"*
#
# **The short answer an interviewer expects**
# - Instead of keeping every activation for the backward pass, keep only a few (the *checkpoints*) and recompute
#   the rest during backward.
# - "Saves about 5x memory and is about 20% slower."
# - Turn it on when activations, not weights, are what does not fit: long sequences, large batches.
#
# ## The precise answer
#
# Backward needs what forward computed: the input of every matrix product, the attention probabilities, the
# inputs of the nonlinearities. Kept for all $n$ layers, that is memory **O(n)** (times batch × sequence length).
# Chen et al. (2016, arXiv 1604.06174) keep only the input of each *segment* of layers and rerun a segment's
# forward when its backward comes. With segments of $\sqrt{n}$ layers, memory is **O(√n)** for the price of
# **one extra forward pass**; their 1,000-layer ResNet went from 48 GB to 7 GB for about 30% more time.
#
# Transformers are usually checkpointed **per block** (Hugging Face, and `peftlab`'s `Block.checkpoint`): the
# $n$ block inputs stay (each $b \times s \times d$), plus the full activations of the one block being
# recomputed. That is still O(n), but with a much smaller constant: a block's input is a small fraction of what
# the block itself saves.
#
# **Compute.** One training step is about one forward ($2N$ FLOPs per token for $N$ parameters) and a backward
# of twice that ($4N$): $6N$. Recomputing the forward adds $2N$: $8N$, **+33%**. The "20% slower" comes from the
# README of Salimans and Bulatov's `gradient-checkpointing` package, not from a paper; measured slowdowns land
# below 33% where parts of the step are not recomputed (the head, the loss, the optimizer) and above it where the
# recomputed part is memory-bound.
#
# What the short answer leaves out:
# - **"5x" is not a constant.** The activation saving grows with depth and with how much each block saves
#   relative to its input; the *total* saving is smaller, because weights, gradients and optimizer state do not
#   shrink at all.
# - **√n needs segments, and a premise.** Chen et al.'s optimum keeps one input per segment of √n layers; it
#   assumes a layer keeps about as much for backward as it passes on. A transformer block keeps many times its
#   input, which moves the best segment length down (measured below).
# - **The frozen-embedding pitfall.** With PyTorch's older *reentrant* checkpoint, a block whose inputs do not
#   require grad passes no gradient to the parameters inside it. With LoRA or QLoRA the embedding is frozen, so
#   that is every block: backward fails with *"element 0 of tensors does not require grad"*.

# %%
import copy
import math
import warnings
import torch
import matplotlib.pyplot as plt
from peftlab import data, load_base, lora, memory_report, count_parameters, scale
from peftlab.train import train, lm_loss
from peftlab.gradient_checkpointing import (checkpointing_sweep, measure_checkpointing, reentrant_checkpointing,
                                            enable_input_require_grads, segment_sweep, THEORY_TIME_RATIO,
                                            FLOPS_PER_TOKEN)
from peftlab.evidence import exact
from peftlab.model import ModelConfig, Transformer
from peftlab.explore.report import table, claim_check, mib

torch.manual_seed(0)
GPU = scale.gpu()  # PEFTLAB_SCALE=gpu opts in to the larger setting; unset: CPU, on any machine
device = "cuda" if GPU else "cpu"
# a larger setting where a GPU is present
DEPTHS = [2, 4, 8, 16, 32] if GPU else [2, 4, 8, 16]
BATCH, SEQ = (8, 256) if GPU else (4, 128)

base = load_base(device=device)
print(f"base model: {count_parameters(base).total:,} parameters, {base.config.n_layers} blocks, "
      f"d_model {base.config.d_model}")

# %% [markdown]
# ## Run it: fine-tune with checkpointing on, and check nothing changed but the memory
#
# Recomputation must give the same activations, so the gradients must be the same. We take LoRA on the
# pretrained base (embedding frozen), compute the gradients with and without checkpointing, and compare.

# %%
ids = torch.randint(0, 256, (BATCH, SEQ), generator=torch.Generator().manual_seed(0)).to(device)

def lora_grads(model, checkpointing):
    model.set_gradient_checkpointing(checkpointing)
    model.zero_grad(set_to_none=True)
    lm_loss(model(ids), ids).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

adapted = lora.add(copy.deepcopy(base), r=8, targets="all-linear")
print("embedding trainable:", adapted.embed_tokens.weight.requires_grad)
g_off, g_on = lora_grads(adapted, False), lora_grads(adapted, True)
torch.testing.assert_close(g_on, g_off)
print(f"{len(g_on)} LoRA gradient tensors: equal with and without checkpointing (assert_close passed)")

# %% [markdown]
# And a real fine-tuning run: LoRA on question answering, 10 steps, once without and once with
# `train(..., gradient_checkpointing=True)`.

# %%
qa = data.qa_task()
losses = {}
for ckpt in (False, True):
    torch.manual_seed(0)  # the same LoRA initialisation for both runs
    model = lora.add(load_base(device=device), r=8, targets="all-linear")
    hist = train(model, qa["train"], steps=10, lr=1e-3, batch_size=16, gradient_checkpointing=ckpt, progress=False)
    losses[ckpt] = hist.loss
print("loss after 10 steps, without / with checkpointing:", f"{losses[False][-1]:.4f} / {losses[True][-1]:.4f}")
print("largest difference over the run:", f"{max(abs(a - b) for a, b in zip(losses[False], losses[True])):.1e}")

# %% [markdown]
# The same loss curve, step for step, up to floating-point rounding: checkpointing changes where memory goes,
# not what is computed.
#
# ## The frozen-embedding pitfall
#
# `peftlab`'s blocks use PyTorch's non-reentrant checkpoint. `reentrant_checkpointing(model)` switches them to the old
# reentrant one for this demonstration.

# %%
adapted.set_gradient_checkpointing(True)
with reentrant_checkpointing(adapted):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            lm_loss(adapted(ids), ids).backward()
            print("no error")
        except RuntimeError as err:
            print("reentrant checkpoint, frozen embedding ->", type(err).__name__ + ":", err)
    print("  warned on the way:", sorted({str(w.message) for w in caught}))

    handle = enable_input_require_grads(adapted)  # the usual repair: the embedding output requires grad
    adapted.zero_grad(set_to_none=True)
    lm_loss(adapted(ids), ids).backward()
    handle.remove()
    torch.testing.assert_close({n: p.grad for n, p in adapted.named_parameters() if p.grad is not None}, g_off)
    print("reentrant + enable_input_require_grads: gradients equal the reference")

torch.testing.assert_close(lora_grads(adapted, True), g_off)
print("non-reentrant (peftlab's default): gradients equal the reference, no repair needed")

# %% [markdown]
# Why: the reentrant checkpoint is an `autograd.Function` that runs the block under `no_grad` and only joins the
# graph through its tensor *inputs*. If none requires grad, its output does not either, the LoRA factors inside
# never see a gradient, and the loss has no `grad_fn`. The non-reentrant variant records the block's graph as
# usual and only swaps the saved tensors for a recomputation, so parameters inside the block are found
# directly. Hugging Face's `enable_input_require_grads()` is the same repair as ours: a hook that makes the
# embedding output require grad.
#
# ## Measure: activation memory and step time against depth
#
# Random-init models of the base model's width (d_model 256, 8 heads) with more and more blocks, one training
# step on a batch of the size below; each byte counted by `memory_report`, each step time a ratio with / without
# checkpointing timed in alternation (`time_ratios`: median and interquartile range over the rounds). Three
# activation figures per depth:
#
# - **off**: everything autograd saves without checkpointing;
# - **on**: with every block checkpointed: the block inputs plus what lies outside the blocks (embedding output,
#   final norm, head, loss);
# - **on, during recompute**: every block but one checkpointed, which is what is alive at the moment one block's
#   activations are rebuilt in the backward pass: the peak to plan for.
#
# For the deepest model the whole step's peak is also measured (`memory_report(..., profile=True)`), recompute
# included.

# %%
print(f"batch {BATCH} x seq {SEQ}")
rows = checkpointing_sweep(DEPTHS[:-1], batch_size=BATCH, seq_len=SEQ, device=device)
rows += checkpointing_sweep(DEPTHS[-1:], batch_size=BATCH, seq_len=SEQ, device=device, peaks=True)
deep = rows[-1]
display(table([(r["depth"], f"{r['parameters']:,}", mib(r["activations_off"]), mib(r["activations_on"]),
                mib(r["activations_recompute"]), f"{r['activations_off'] / r['activations_on']:.1f}x",
                f"{r['activations_off'] / r['activations_recompute']:.1f}x") for r in rows],
              ["blocks", "parameters", "activations off", "on", "on, during recompute", "saved: stored",
               "saved: with recompute"]))
print(f"{deep['depth']} blocks, measured peak of a whole step: {mib(deep['peak_off'])} without, {mib(deep['peak_on'])} "
      f"with checkpointing: {deep['peak_off'] / deep['peak_on']:.2f}x")

# %%
per_block_off = (rows[-1]["activations_off"] - rows[0]["activations_off"]) / (rows[-1]["depth"] - rows[0]["depth"])
per_block_on = (rows[-1]["activations_on"] - rows[0]["activations_on"]) / (rows[-1]["depth"] - rows[0]["depth"])
block_input = BATCH * SEQ * base.config.d_model * 4
print(f"activations per extra block: {mib(per_block_off)} without, {mib(per_block_on)} with checkpointing "
      f"(one block input, {BATCH} x {SEQ} x {base.config.d_model} fp32 = {mib(block_input)})")
print(f"a block saves {per_block_off / per_block_on:.1f}x its own input for backward")

# %% [markdown]
# Both grow linearly with depth; checkpointing changes the slope from what a block saves to the size of its
# input. Step times (they vary from run to run, so this cell is excluded from the notebook tests):

# %% tags=["nbval-ignore-output"]
display(table([(r["depth"], str(r["time_ratio"])) for r in rows],
              ["blocks", "step time with / without checkpointing: median (IQR, range, rounds)"]))
print(f"{deep['depth']} blocks: {deep['time_ratio'].median - 1:+.0%} (IQR {deep['time_ratio'].q1 - 1:+.0%} to "
      f"{deep['time_ratio'].q3 - 1:+.0%}); theory (8N vs 6N FLOPs) {THEORY_TIME_RATIO - 1:+.0%}")

# %% tags=["nbval-ignore-output"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
d = [r["depth"] for r in rows]
ax1.plot(d, [r["activations_off"] / 2**20 for r in rows], "o-", label="off")
ax1.plot(d, [r["activations_recompute"] / 2**20 for r in rows], "s-", label="on, during recompute")
ax1.plot(d, [r["activations_on"] / 2**20 for r in rows], "^-", label="on, stored")
ax1.set_xlabel("blocks"); ax1.set_ylabel("activation MiB"); ax1.set_title("Activation memory, measured"); ax1.legend()
ax2.errorbar(d, [r["time_ratio"].median for r in rows],
             yerr=[[r["time_ratio"].median - r["time_ratio"].q1 for r in rows],
                   [r["time_ratio"].q3 - r["time_ratio"].median for r in rows]], fmt="^-", capsize=3,
             label="with / without, median and IQR")
ax2.axhline(THEORY_TIME_RATIO, color="k", ls="--", lw=1, label="8/6 (theory)")
ax2.set_xlabel("blocks"); ax2.set_ylabel("step time ratio"); ax2.set_title("Step time, measured"); ax2.legend()
plt.tight_layout(); plt.show()

# %% [markdown]
# ## Segments of k blocks: Chen et al.'s √n
#
# Chen et al. keep one input per *segment* and recompute a whole segment at a time. With $n$ blocks, segments of
# $k$, a block input of $I$ bytes and $S$ bytes kept by a block for backward, the activation part of the peak is
# about $(n/k)\,I + k\,S$: the kept inputs, plus one segment rebuilt. It is smallest at $k^* = \sqrt{n I / S}$,
# which is their $\sqrt{n}$ when $S = I$. A 16-block model (width 128) measured at every segment length:

# %%
deep16 = Transformer(ModelConfig(d_model=128, n_heads=4, d_ff=344, n_layers=16, max_seq_len=256)).to(device)
seg_ids = ids[:, :64]
segs = segment_sweep(deep16, seg_ids, [0, 1, 2, 4, 8, 16])
n16, block_in = 16, seg_ids.numel() * 128 * 4
kept_per_block = (segs[0]["kept"] - segs[-1]["kept"] + block_in) / n16  # all blocks kept minus one segment of 16
k_star = math.sqrt(n16 * block_in / kept_per_block)
best = min(segs[1:], key=lambda r: r["peak"])["segment"]
display(table([("off" if r["segment"] == 0 else r["segment"], mib(r["peak"]), mib(r["kept"])) for r in segs],
              ["blocks per segment", "measured peak", "kept in forward"]))
print(f"a block keeps {kept_per_block / block_in:.1f}x its input (S / I); predicted best segment sqrt(n I / S) = "
      f"{k_star:.2f} blocks; measured best: {best}; sqrt(n) = {math.sqrt(n16):.0f}")

fig, ax = plt.subplots(figsize=(6, 3.4))
ks = [r["segment"] for r in segs[1:]]
ax.plot(ks, [r["peak"] / 2**20 for r in segs[1:]], "o-", label="measured peak")
ax.axhline(segs[0]["peak"] / 2**20, color="grey", ls=":", label="no checkpointing")
floor = segs[0]["peak"] - segs[0]["kept"]  # what is not activations
ax.plot(ks, [(floor + n16 / k * block_in + k * kept_per_block) / 2**20 for k in ks], "k--", lw=1,
        label="(n/k) I + k S + the rest")
ax.set_xscale("log", base=2); ax.set_xticks(ks, [str(k) for k in ks])
ax.set_xlabel("blocks per segment k"); ax.set_ylabel("MiB"); ax.legend(fontsize=8)
ax.set_title("16 blocks: peak against segment length")
plt.show()

# %% [markdown]
# The printed line gives the measured ratio $S/I$ and where it puts the optimum. A transformer block keeps the
# inputs of its matrix products, the attention output and the MLP's intermediates: many times the single
# $b \times s \times d$ tensor it passes on, so here the left arm of the U (kept inputs) is small next to the
# right arm (one segment rebuilt), and the curve's minimum sits at short segments. Chen's √n is the special case
# of layers that keep about what they pass on.
#
# ## On the pretrained base: where the saving goes
#
# The same measurement on the base model itself (4 blocks), for full fine-tuning and for LoRA, with each step's
# peak measured (a step after the first; recompute included). The activation saving is the same in bytes; what it
# means for the whole step depends on how much else the step needs.

# %%
report_rows, base_saved = [], {}
for name, make in (("full fine-tuning", lambda: copy.deepcopy(base)),
                   ("LoRA r=8, all linear", lambda: lora.add(copy.deepcopy(base), r=8, targets="all-linear"))):
    m = make()
    off = memory_report(copy.deepcopy(m), ids, step="later", profile=True)
    m.set_gradient_checkpointing(True)
    on = memory_report(m, ids, step="later", profile=True)
    base_saved[name] = off.peak / on.peak
    report_rows.append((name, mib(off.activations), mib(on.activations), mib(off.peak), mib(on.peak),
                        f"{off.peak / on.peak:.2f}x"))
display(table(report_rows, ["method", "activations kept, off", "activations kept, on", "measured peak, off",
                            "measured peak, on", "peak saved"]))

# %% [markdown]
# With LoRA almost nothing but activations is left (frozen weights, tiny gradients and optimizer state), so
# checkpointing cuts the peak far more than for full fine-tuning, where 16 bytes per parameter stay whatever
# happens to the activations.
#
# ## Claim check

# %%
act_ratio = deep["activations_off"] / deep["activations_recompute"]
peak_ratio = deep["peak_off"] / deep["peak_on"]
display(claim_check([
    (f"saves ~5x memory: activations, {deep['depth']} blocks", "Chen et al.: 48 GB -> 7 GB (6.9x), a 1,000-layer ResNet",
     f"activations {act_ratio:.1f}x smaller at the recompute point; at least 5x", exact(act_ratio, 5.0, margin=0).verdict),
    (f"saves ~5x memory: whole step, {deep['depth']} blocks", "weights, gradients, optimizer state do not shrink",
     f"measured peak {peak_ratio:.2f}x smaller; at least 5x", exact(peak_ratio, 5.0, margin=0).verdict),
    ("saves ~5x memory: whole step, the 4-block base, full fine-tuning", "(the same)",
     f"measured peak {base_saved['full fine-tuning']:.2f}x smaller; at least 5x",
     exact(base_saved["full fine-tuning"], 5.0, margin=0).verdict),
    ("saves ~5x memory: whole step, the 4-block base, LoRA", "(the same)",
     f"measured peak {base_saved['LoRA r=8, all linear']:.2f}x smaller; at least 5x",
     exact(base_saved["LoRA r=8, all linear"], 5.0, margin=0).verdict),
    ("segments of sqrt(n) blocks use the least memory", "Chen et al. 2016 (arXiv 1604.06174), abstract: O(sqrt n) memory",
     f"16 blocks: best segment {best} (sqrt(n) = 4); within a factor of 2.5 of 4",
     exact(math.log2(best / 4), 0.0, claim="equivalent", margin=math.log2(2.5)).verdict),
]))

# %% [markdown]
# The saving depends on depth: the table of the depth sweep shows it growing with the number of blocks, and on the
# 4-block base the whole step saves far less than on the deepest model.

# %% tags=["nbval-ignore-output"]
ratio16 = deep["time_ratio"]  # two-sided claims: the IQR inside center ± margin, or entirely outside it
display(claim_check([
    ("~20% slower", "gradient-checkpointing README (Salimans & Bulatov)",
     f"{deep['depth']} blocks: {ratio16}; 1.20 ± 0.07",
     ratio16.verdict("equivalent", 0.07, center=1.20)),
    ("one extra forward pass: +33% compute", "theory 8N / 6N; Chen et al.: ~30% more time",
     f"{deep['depth']} blocks: {ratio16}; 1.33 ± 0.07",
     ratio16.verdict("equivalent", 0.07, center=THEORY_TIME_RATIO)),
]))

# %% [markdown]
# ## Explore: depth, batch, sequence length, checkpointing
#
# Each change runs one real training step on a random-init model of the base's width and adds a stacked bar of
# measured bytes. Turn checkpointing on and off at a long sequence and watch the red part (activations); then
# add blocks and watch which bars grow.

# %% [markdown]
# ![The explorer below as it first appears, at its default settings](figures/15_explorer.png)
#
# *The explorer below as it first appears, photographed in JupyterLab by `scripts/explorer_pictures.py`; run
# the cell for the live one.*

# %% tags=["explorer", "nbval-ignore-output"]
from peftlab.explore.checkpointing import CheckpointingExplorer
CheckpointingExplorer(device=device).show()

# %% [markdown]
# ## Takeaways for the interview
#
# - Gradient checkpointing trades compute for activation memory: keep block inputs, recompute the block in the
#   backward pass; one extra forward, about **+33% FLOPs** in theory (8N vs 6N), measured above.
# - The memory saving is on **activations** only and grows with depth; here a block saves several times its input
#   (table above). "5x" is neither a constant nor about total memory: with full fine-tuning the 16 bytes per
#   parameter stay, with LoRA the saving on the total is large because activations are almost all that is left.
# - Chen et al.'s O(√n) needs segments of √n layers, and layers that keep about what they pass on; transformer blocks
#   keep many times their input, so the measured best segment is shorter. Per-block checkpointing is O(n) with a
#   much smaller constant, and selective checkpointing (some blocks, or only attention) sits in between.
# - With a frozen embedding (LoRA, QLoRA, prompt methods) use the non-reentrant checkpoint, or make the embedding
#   output require grad; otherwise "element 0 of tensors does not require grad".
#
# **Follow-up questions to expect**
# - *Which activations would you recompute first?* The cheap-to-recompute, expensive-to-store ones. Korthikanti et
#   al. 2022 (arXiv 2205.05198, "selective activation recomputation") recompute only the attention core ($QK^T$, the
#   softmax, its dropout and the attention over $V$), whose $5as^2b$ bytes dominate at long sequences and cost few
#   FLOPs to rebuild; the MLP and the linear layers keep their activations.
# - *Does checkpointing help inference?* No: inference keeps no activations for a backward pass.
# - *Why might the measured slowdown be below 33%?* The optimizer step, the output head and the loss are not
#   recomputed, and the backward of a matmul costs more than twice its forward on some kernels.
