# %% [markdown]
# # 03 · How does LoRA work?
#
# **The interview question.** *"Explain LoRA. What are A and B, how are they initialised, and what happens at
# inference time?"*
#
# **The short answer an interviewer expects**
# - Freeze the pretrained weight matrix $W$ and learn a low-rank update $\Delta W = BA$ of rank $r$, so the
#   layer computes $W x + BAx$.
# - Only $A$ and $B$ train: $r(d + k)$ numbers per layer instead of $d \cdot k$.
# - One factor starts at zero, so training starts exactly from the pretrained model.
# - After training, $BA$ is added into $W$ ("merged"): inference costs nothing extra.
#
# ## The precise answer
#
# Hu et al. 2021, *LoRA: Low-Rank Adaptation of Large Language Models* (arXiv 2106.09685), eq. 3: for a
# pretrained weight $W_0 \in \mathbb{R}^{d \times k}$ that maps $k$ inputs to $d$ outputs,
#
# $$h = W_0 x + \Delta W x = W_0 x + \frac{\alpha}{r} B A x, \qquad B \in \mathbb{R}^{d \times r},\;
#   A \in \mathbb{R}^{r \times k},\; r \ll \min(d, k).$$
#
# What the short answer leaves out or gets wrong:
#
# - **The shapes are not square in general.** An MLP projection maps 256 features to 688 here, so $W_0$ is
#   $688 \times 256$, $B$ is $688 \times r$ and $A$ is $r \times 256$. The phrase that circulates, "A is
#   $d \times r$ and B is $r \times d$", assumes a square matrix and swaps the letters of the paper; write-ups
#   differ on which letter is which. What does not change: the factor that *produces the output* (next to
#   $d$) starts at zero.
# - **Initialisation.** The paper draws $A$ from a random Gaussian and sets $B = 0$ (section 4.1); Hugging Face
#   PEFT, and peftlab, draw $A$ Kaiming-uniform instead. Either way $\Delta W = BA = 0$ at step 0.
# - **Why not both at zero.** With $g = \partial L / \partial h$, the gradients are
#   $\partial L / \partial B = \frac{\alpha}{r}\, g\,(Ax)^\top$ and $\partial L / \partial A = \frac{\alpha}{r}\, B^\top g\, x^\top$.
#   With $A$ random and $B = 0$, $B$ gets a gradient at once and $A$ follows after the first step. With both at
#   zero, both gradients are zero forever: nothing trains.
# - **The scale $\alpha / r$** lets one keep the learning rate when changing $r$ (Hu et al. §4.1: "we simply set
#   $\alpha$ to the first $r$ we try and do not tune it");
#   notebook 11 measures this against rsLoRA's $\alpha / \sqrt{r}$.
# - **Merging** gives one matrix $W_0 + \frac{\alpha}{r} BA$ of the original shape, so a merged model runs exactly
#   as fast as the base; unmerged, every adapted layer pays two thin extra matmuls (notebook 18).
#
# Below we build LoRA by hand in a few lines, check it against `peftlab.lora`, look at the shapes and the
# gradients at step 0, train it for real, and merge it.

# %%
import copy
import math

import matplotlib.pyplot as plt
import torch
from torch import nn

from peftlab import count_parameters, data, exact_match, load_base, lora, scale
from peftlab.explore.report import claim_check, table
from peftlab.tokenizer import ByteTokenizer
from peftlab.evaluate import complete
from peftlab.train import collate, lm_loss, train

torch.manual_seed(0)
GPU = scale.gpu()  # PEFTLAB_SCALE=gpu opts in to the larger setting; unset: CPU, on any machine
device = "cuda" if GPU else "cpu"
STEPS = 300 if GPU else 80  # a larger setting where a GPU is present

model = load_base(device=device)
print(f"base model: {count_parameters(model).total:,} parameters")
print(model.layers[0].self_attn.q_proj, model.layers[0].mlp.gate_proj, sep="\n")

# %% [markdown]
# ## LoRA by hand, in a few lines
#
# A frozen `nn.Linear` from the base model, and two new matrices around it. The comments give the shapes;
# `x @ A.T @ B.T` goes $k \to r \to d$ and never forms the $d \times k$ matrix $BA$.

# %%
class LoRAByHand(nn.Module):
    """h = W0 x + (alpha / r) B A x around a frozen nn.Linear (Hu et al. 2021, eq. 3)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base = base.requires_grad_(False)  # W0: weight (d, k) = (out_features, in_features)
        d, k = base.weight.shape
        self.A = nn.Parameter(torch.randn(r, k) / math.sqrt(k))  # (r, k), Gaussian as in the paper
        self.B = nn.Parameter(torch.zeros(d, r))  # (d, r), zero: B A = 0, the layer is unchanged at init
        self.scaling = alpha / r

    def forward(self, x):  # x: (..., k)
        return self.base(x) + self.scaling * (x @ self.A.T @ self.B.T)  # (..., r) -> (..., d)


q_proj = model.layers[0].self_attn.q_proj  # the pretrained layer, 256 -> 256
hand = LoRAByHand(copy.deepcopy(q_proj), r=8, alpha=16)
x = torch.randn(2, 10, 256, device=device)
print("hand-made LoRA unchanged at init:", torch.equal(hand.to(device)(x), q_proj(x)))

# %% [markdown]
# Now the same thing from the library, `lora.add` on a copy of the whole model, with the *same* $A$ and $B$
# copied in. We give $B$ random values first: with $B = 0$ both sides would just be $W_0 x$ and the check
# would prove nothing.

# %%
with torch.no_grad():
    hand.B.normal_(std=0.02)
lib_model = lora.add(copy.deepcopy(model), r=8, alpha=16, targets=("q_proj",))
lib = lib_model.layers[0].self_attn.q_proj  # a lora.LoRALinear wrapping the same W0
with torch.no_grad():
    lib.lora_A["default"].copy_(hand.A)
    lib.lora_B["default"].copy_(hand.B)
torch.testing.assert_close(hand(x), lib(x))
print("hand-made LoRA == peftlab.lora on the same A, B: True")
print("scaling alpha / r:", hand.scaling, lib.config["default"].scaling)

# %% [markdown]
# ## Shapes: not square in general
#
# One adapter per kind of linear layer, rank 8, read off the library's layers. $W_0$ is $d \times k$
# (PyTorch stores `weight` as (out, in)), $B$ is $d \times r$, $A$ is $r \times k$.

# %%
R = 8
shapes_model = lora.add(copy.deepcopy(model), r=R, targets="all-linear")
rows = []
for name in ("q_proj", "gate_proj", "down_proj"):
    layer = shapes_model.get_submodule(f"layers.0.{'self_attn' if name == 'q_proj' else 'mlp'}.{name}")
    W0, A, B = layer.base_layer.weight, layer.lora_A["default"], layer.lora_B["default"]
    d, k = W0.shape
    rows.append((name, f"{d} × {k}", f"{tuple(B.shape)}", f"{tuple(A.shape)}", f"{tuple((B @ A).shape)}",
                 f"{d * k:,}", f"{A.numel() + B.numel():,}", f"{(A.numel() + B.numel()) / (d * k):.1%}"))
display(table(rows, ["layer", "W0 (d × k)", "B (d × r)", "A (r × k)", "B A", "d·k", "r(d + k)", "ratio"]))
gate = shapes_model.layers[0].mlp.gate_proj
print("gate_proj:  W0", tuple(gate.base_layer.weight.shape), " B", tuple(gate.lora_B["default"].shape),
      " A", tuple(gate.lora_A["default"].shape))

# %% [markdown]
# ## Which factor starts at zero, and why
#
# One real batch of the Q/A task, one backward pass, the gradient norms of all $A$s and all $B$s (LoRA on
# `q_proj` and `v_proj` of every layer). Three initialisations: the paper's ($B = 0$, $A$ random), the
# mirror image ($A = 0$, $B$ random), and both at zero. Then 20 training steps from each.

# %%
qa = data.qa_task()
ids, labels = (t.to(device) for t in collate(qa["train"][:16], ByteTokenizer()))
with torch.no_grad():
    base_logits = model(ids)


def at_step_zero(init: str) -> dict:
    m = lora.add(copy.deepcopy(model), r=8, alpha=16, targets=("q_proj", "v_proj"))
    layers = [l for l in m.modules() if isinstance(l, lora.LoRALinear)]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for l in layers:
            A, B = l.lora_A["default"], l.lora_B["default"]
            if init in ("A = 0, B random", "both zero"):
                A.zero_()
            if init == "A = 0, B random":
                B.copy_(torch.randn(B.shape, generator=gen) * 0.02)
            if init == "both zero":
                B.zero_()
    unchanged = torch.equal(m(ids), base_logits)
    lm_loss(m(ids), labels).backward()
    grad = {x: math.sqrt(sum(getattr(l, f"lora_{x}")["default"].grad.pow(2).sum().item() for l in layers))
            for x in "AB"}
    for p in m.parameters():
        p.grad = None
    train(m, qa["train"], steps=20, lr=3e-3, progress=False)
    moved = max(l.delta_weight("default").abs().max().item() for l in layers)
    return {"unchanged": unchanged, "grad_A": grad["A"], "grad_B": grad["B"], "moved": moved}


inits = ["B = 0, A random (paper, PEFT)", "A = 0, B random", "both zero"]
zero = {i: at_step_zero(i) for i in inits}
display(table([(i, r["unchanged"], f"{r['grad_A']:.2e}", f"{r['grad_B']:.2e}", f"{r['moved']:.2e}")
               for i, r in zero.items()],
              ["init", "output unchanged at step 0", "‖∇A‖ at step 0", "‖∇B‖ at step 0", "max |ΔW| after 20 steps"]))

# %% [markdown]
# Read the rows against the gradient formulas above: with $B = 0$ the gradient of $A$ is exactly zero (it
# carries $B^\top$) while $B$ gets one (it carries $Ax$); one step later $B \neq 0$ and both move. The mirror
# image also keeps the model unchanged at step 0 and also trains here, but the two are not equivalent: Hayou,
# Ghosh & Yu 2024 (arXiv 2406.08447) show that $B = 0$ with $A$ random allows larger stable learning rates than
# $A = 0$ with $B$ random, which is why the paper's choice is the default (this notebook does not sweep learning
# rates for the two). With both at zero every gradient is zero and AdamW has nothing to act on: the adapter stays
# at zero for good.
#
# ## Run it: LoRA on the Q/A task
#
# The base model read facts about 120 people in pre-training, never as questions (notebook 10). We train a
# rank-8 LoRA on `q_proj` and `v_proj` on questions about half of the people and ask about the other half.

# %%
lora_model = lora.add(copy.deepcopy(model), r=8, alpha=16, targets=("q_proj", "v_proj"))
n = count_parameters(lora_model)
print(f"trainable: {n.trainable:,} of {n.total:,} parameters ({n.percent:.2f}%)")
before = exact_match(lora_model, qa["test"])
hist = train(lora_model, qa["train"], steps=STEPS, lr=3e-3, batch_size=16, progress=False)
after = exact_match(lora_model, qa["test"])
print(f"{hist.steps} steps in {hist.wall_time:.1f} s, loss {hist.loss[0]:.3f} -> {sum(hist.loss[-10:]) / 10:.3f}")
print(f"held-out Q/A exact match: {before:.1%} -> {after:.1%}")
for ex in qa["test"][:3]:
    print(f"  {ex.prompt!r} -> {complete(lora_model, [ex.prompt], 12)[0].split(chr(10))[0]!r} (truth {ex.response.strip()!r})")

# %% [markdown]
# ## Merge: one matrix again
#
# `lora.merge` adds $\frac{\alpha}{r} BA$ into $W_0$ in place; `lora.unmerge` takes it out again. The logits
# must agree up to float rounding: float32 keeps about 7 significant digits and the logits here reach the tens,
# so differences of order $10^{-5}$ are rounding, not a different model. We print the checks as booleans, with
# the difference relative to the largest logit.

# %%
test_ids, _ = (t.to(device) for t in collate(qa["test"][:32], ByteTokenizer()))
with torch.no_grad():
    unmerged = lora_model(test_ids)
    lora.merge(lora_model)
    merged = lora_model(test_ids)
    lora.unmerge(lora_model)
    back = lora_model(test_ids)
merge_diff = (merged - unmerged).abs().max().item()
logit_scale = unmerged.abs().max().item()
print(f"largest |logit|: {logit_scale:.0f}")
print("max |logit difference| merged vs unmerged < 1e-4:", merge_diff < 1e-4)
print("  relative to the largest logit < 1e-5:", merge_diff / logit_scale < 1e-5)
print("max |logit difference| after unmerge < 1e-4:", (back - unmerged).abs().max().item() < 1e-4)
print(f"relative size of the update ‖ΔW‖ / ‖W0‖ in layers.0 q_proj: "
      f"{lora_model.layers[0].self_attn.q_proj.delta_weight('default').norm().item() / q_proj.weight.norm().item():.3f}")

# %% [markdown]
# ## Measure: what trained, and the rank of what it learned
#
# $\Delta W = \frac{\alpha}{r} BA$ has rank at most $r$, whatever the training did: its singular values beyond
# the $r$-th are zero up to rounding.

# %%
delta = lora_model.layers[0].self_attn.q_proj.delta_weight("default").detach().double().cpu()
sv = torch.linalg.svdvals(delta)
numerical_rank = int((sv > sv[0] * 1e-6).sum())
print(f"ΔW of layers.0 q_proj: shape {tuple(delta.shape)}, numerical rank {numerical_rank} (r = 8)")
display(table([
    ("base model", "0", f"{before:.1%}", "—"),
    ("LoRA r=8 on q_proj, v_proj", f"{n.trainable:,} ({n.percent:.2f}%)", f"{after:.1%}",
     f"{'yes' if merge_diff < 1e-4 else 'no'}"),
], ["model", "trainable parameters", "held-out Q/A exact match", "merged == unmerged (< 1e-4)"]))

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
ax1.plot(hist.loss)
ax1.set(xlabel="step", ylabel="loss (answer tokens)", title="LoRA r=8 on the Q/A task")
ax2.semilogy(range(1, 25), sv[:24].clamp_min(1e-18), "o-")
ax2.axvline(8.5, color="gray", ls="--", lw=1)
ax2.set(xlabel="index", ylabel="singular value", title="ΔW of layers.0 q_proj: rank ≤ r = 8")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Claim check

# %%
A_init = lora.add(copy.deepcopy(model), r=8, targets=("q_proj",)).layers[0].self_attn.q_proj.lora_A["default"]
bound = 1 / math.sqrt(256)  # kaiming_uniform_(a=sqrt(5)) on fan_in k: U(-1/sqrt(k), 1/sqrt(k))
uniform = A_init.abs().max().item() <= bound and abs(A_init.std().item() - bound / math.sqrt(3)) < 0.1 * bound
gate_B, gate_A = gate.lora_B["default"], gate.lora_A["default"]
display(claim_check([
    ("W' = W + A B with A d × r, B r × d", "Hu et al. eq. 3: B ∈ R^{d×r}, A ∈ R^{r×k}, W0 ∈ R^{d×k}",
     f"gate_proj: W0 {tuple(gate.base_layer.weight.shape)}, B {tuple(gate_B.shape)}, A {tuple(gate_A.shape)}",
     "letters swapped, and not square" if gate_B.shape[0] != gate_A.shape[1] else "holds"),
    ("training starts from the pretrained model", "B = 0 at init, so B A = 0 (section 4.1)",
     f"logits identical at step 0: {zero[inits[0]]['unchanged']}", zero[inits[0]]["unchanged"]),
    ("B starts at zero, A random; not both zero", "∂L/∂B ∝ A x, ∂L/∂A ∝ Bᵀ",
     f"‖∇B‖ = {zero[inits[0]]['grad_B']:.2e} with B = 0; both zero: ‖∇‖ = {zero['both zero']['grad_B']:.0e}, "
     f"ΔW after 20 steps {zero['both zero']['moved']:.0e}",
     zero[inits[0]]["grad_B"] > 0 and zero["both zero"]["moved"] == 0),
    ("A is Gaussian", "paper: Gaussian; PEFT: Kaiming-uniform",
     f"peftlab A: max |A| = {A_init.abs().max().item():.4f} ≤ 1/√256 = {bound:.4f}",
     "Kaiming-uniform here (as PEFT)" if uniform else "not uniform"),
    ("no inference latency when merged", "W0 + (α/r) B A is one matrix of W0's shape",
     f"merged == unmerged logits (|diff| < 1e-4, relative < 1e-5): {merge_diff / logit_scale < 1e-5}",
     merge_diff < 1e-4 and merge_diff / logit_scale < 1e-5),
    ("a tiny adapter learns the task", "GPT-3 175B: 4.7M trainable (~0.003%), on par with full FT",
     f"{n.percent:.2f}% trainable: held-out Q/A {before:.0%} → {after:.0%}", after >= before + 0.5),
]))

# %% [markdown]
# ## Explore: the rank
#
# Move the slider: a fresh rank-$r$ LoRA on `q_proj` and `v_proj` trains for a few dozen steps on the Q/A
# task, and the panel shows the shapes of $A$ and $B$, the parameter count, the held-out accuracy and the
# singular values of the learned $\Delta W$ in layer 0: exactly $r$ of them are nonzero. The logic is one
# function that returns numbers; the widget only draws them.

# %%
def rank_view(r: int, steps: int = 40) -> dict:
    """Train a rank-r LoRA (q_proj, v_proj) for `steps` on Q/A; shapes, counts, accuracy, ΔW's spectrum."""
    m = lora.add(copy.deepcopy(model), r=r, alpha=2 * r, targets=("q_proj", "v_proj"))
    train(m, qa["train"], steps=steps, lr=3e-3, progress=False)
    layer = m.layers[0].self_attn.q_proj
    s = torch.linalg.svdvals(layer.delta_weight("default").detach().double().cpu())
    return {"A": tuple(layer.lora_A["default"].shape), "B": tuple(layer.lora_B["default"].shape),
            "trainable": count_parameters(m).trainable, "accuracy": exact_match(m, qa["test"][:48]),
            "singular_values": s.tolist(), "rank": int((s > s[0] * 1e-6).sum())}


check = rank_view(2, steps=5)
print(f"r = 2: A {check['A']}, B {check['B']}, {check['trainable']:,} trainable, numerical rank of ΔW {check['rank']}")

# %% tags=["nbval-skip"]
import ipywidgets as W


def show_rank(r):
    v = rank_view(r)
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.semilogy(range(1, 33), [max(x, 1e-18) for x in v["singular_values"][:32]], "o-")
    ax.axvline(r + 0.5, color="gray", ls="--", lw=1)
    ax.set(xlabel="index", ylabel="singular value",
           title=f"r={r}: A {v['A']}, B {v['B']}, {v['trainable']:,} trainable, "
                 f"held-out {v['accuracy']:.0%}, rank(ΔW) = {v['rank']}")
    plt.show()


W.interact(show_rank, r=W.SelectionSlider(options=[1, 2, 4, 8, 16, 32], value=8, description="rank r",
                                          continuous_update=False));

# %% [markdown]
# ## Takeaways for the interview
#
# - LoRA keeps $W_0$ frozen and adds $\frac{\alpha}{r} BA$ with $B \in \mathbb{R}^{d \times r}$,
#   $A \in \mathbb{R}^{r \times k}$: not square in general, and the letters differ between write-ups. Say which
#   factor touches the output.
# - That factor starts at zero, so the model is exactly the pretrained one at step 0; the other one is random,
#   or nothing would ever get a gradient (measured above: both at zero never moves).
# - A rank-8 adapter on two projections, about 1% of the parameters, taught this model the Q/A format.
# - Merged, it is one matrix per layer again: the same logits, no extra latency.
#
# **Follow-up questions to expect**
# - *Why scale by $\alpha / r$?* So the size of the update does not grow with $r$ and the learning rate can stay;
#   rsLoRA argues for $\alpha / \sqrt{r}$ at large $r$ (notebook 11).
# - *Which layers should get LoRA?* The paper adapts $W_q$ and $W_v$; QLoRA found adapting all linear layers
#   matters more than the rank (notebooks 11, 20).
# - *Why is it cheaper to train?* No gradient or optimizer state for $W_0$ (notebook 04).
# - *Can you serve many adapters on one base?* Yes, unmerged, switching per request (notebook 12).
