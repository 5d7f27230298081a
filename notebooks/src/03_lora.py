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

from peftlab import count_parameters, data, exact_match, load_base, lora, scale, studies
from peftlab.evaluate import complete
from peftlab.evidence import exact
from peftlab.explore.report import claim_check, table
from peftlab.explore.studies import claim_table, describe, final_table, plot_bands, plot_sweep
from peftlab.tokenizer import ByteTokenizer
from peftlab.train import collate, lm_loss, train

torch.manual_seed(0)
GPU = scale.gpu()  # PEFTLAB_SCALE=gpu opts in to the larger setting; unset: CPU, on any machine
device = "cuda" if GPU else "cpu"

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
    torch.manual_seed(0)
    m = lora.add(copy.deepcopy(model), r=8, alpha=16, targets=("q_proj", "v_proj"),
                 init="mirror" if init == "A = 0, B random" else "default")
    layers = [l for l in m.modules() if isinstance(l, lora.LoRALinear)]
    if init == "both zero":
        with torch.no_grad():
            for l in layers:
                l.lora_A["default"].zero_()
    change = (m(ids) - base_logits).abs().max().item()
    lm_loss(m(ids), labels).backward()
    grad = {x: math.sqrt(sum(getattr(l, f"lora_{x}")["default"].grad.pow(2).sum().item() for l in layers))
            for x in "AB"}
    for p in m.parameters():
        p.grad = None
    train(m, qa["train"], steps=20, lr=3e-3, progress=False)
    moved = max(l.delta_weight("default").abs().max().item() for l in layers)
    return {"unchanged": change == 0, "change": change, "grad_A": grad["A"], "grad_B": grad["B"], "moved": moved}


inits = ["B = 0, A random (paper, PEFT)", "A = 0, B random", "both zero"]
zero = {i: at_step_zero(i) for i in inits}
display(table([(i, r["unchanged"], f"{r['grad_A']:.2e}", f"{r['grad_B']:.2e}", f"{r['moved']:.2e}")
               for i, r in zero.items()],
              ["init", "output unchanged at step 0", "‖∇A‖ at step 0", "‖∇B‖ at step 0", "max |ΔW| after 20 steps"]))

# %% [markdown]
# Read the rows against the gradient formulas above: with $B = 0$ the gradient of $A$ is exactly zero (it
# carries $B^\top$) while $B$ gets one (it carries $Ax$); one step later $B \neq 0$ and both move. The mirror
# image also keeps the model unchanged at step 0 and also trains, but the two are not equivalent: Hayou, Ghosh &
# Yu 2024 (arXiv 2406.08447) show that $B = 0$ with $A$ random allows larger learning rates "without causing output
# instability" than $A = 0$ with $B$ random. The study below sweeps learning rates for both. With both at zero
# every gradient is zero and AdamW has nothing to act on: the adapter stays at zero for good.
#
# ## The study: which factor starts at zero, across learning rates; and full fine-tuning at the same budget
#
# Declared in `peftlab/studies/lora_init.py` and run once by `python -m peftlab.studies run 03_init` (its results
# ship with peftlab): LoRA r = 8, alpha = 16 on $W_q, W_v$ with $B = 0$ (`lora.add`'s default) and with the mirror
# image $A = 0$ (`lora.add(init="mirror")`, $B$ drawn as `nn.Linear` draws a weight of its shape), both swept over
# the same eight learning rates, 3e-5 to 0.1, for 100 steps with five seeds each; full fine-tuning sweeps its own
# four rates. Then five seeds train for 300 steps at each set-up's best rate. A rate "trains" when the validation
# answer loss after 100 steps is at most 1.0 nats, a level declared with the claims before the run.

# %%
results = studies.load_results("03_init")  # refuses a file whose config or base model differs from today's
study = studies.get("03_init")
print(describe(results))

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4))
plot_sweep(ax1, results)
ax1.axhline(1.0, color="grey", lw=0.8, ls=":")
ax1.set_ylim(top=3.5)
plot_bands(ax2, results)
ax2.set_ylim(top=2.5)
plt.tight_layout()
plt.show()
SUCCESS = study.claims[0].success  # declared with the claim: a rate trains at or below this validation loss
grid = [g["lr"] for g in results["sweep"]["b_zero"]["grid"]]
display(table([(label, *(f"{g['mean']:.2f}" for g in results["sweep"][label]["grid"]),
                " ".join(map(str, studies.sweep_width(results["sweep"], label, SUCCESS))))
               for label in ("b_zero", "a_zero")],
              ["set-up", *(f"{lr:g}" for lr in grid), f"rates that train (<= {SUCCESS} nats), seeds 0-4"]))
print("validation answer loss after 100 steps, mean of 5 seeds, per learning rate; the base model: "
      f"{results['runs']['b_zero']['seeds'][0]['curve']['val']['answer_loss'][0]:.2f} nats")
display(final_table(results))

# %% [markdown]
# The left panel is the sweep the rates come from (validation answer loss after 100 steps, mean of five seeds, the
# chosen rate circled; the dotted line is the declared 1.0 nats). Both initialisations choose 3e-3, inside the grid,
# and both train at exactly three rates, 1e-3, 3e-3 and 1e-2, for every seed but one (one mirror-image seed also
# gets under the line at 3e-4): on this factor-of-3 grid the mirror image stops training at the same place, between
# 1e-2 and 3e-2, so a difference in the largest stable rate smaller than a factor of 3 cannot show here. What does
# show is the shape: at small rates the mirror image learns faster (1.02 against 1.21 nats at 3e-4, 2.39 against 3.68
# at 1e-4; its random $B$, drawn as `nn.Linear` draws a 256 × 8 weight, is bounded by $1/\sqrt{8}$, so a step on $A$
# moves $\Delta W$ more than a step on $B$ does when $A$ is bounded by $1/\sqrt{256}$), and at the good rates it is
# worse (0.39 against 0.25 at 3e-3). After 300 steps at each one's own best rate the gap holds on held-out people:
# 0.257 against 0.178 nats, 66.5% against 84.6% exact match (the table). Full fine-tuning, at its own best rate
# 1e-4 and the same 300 steps, ends far below both: 0.041 nats. No set-up met the plateau rule within the 300 steps,
# so these are verdicts about that budget.
#
# ## A live run, checked against the study
#
# The base model read facts about 120 people in pre-training, never as questions (notebook 10). One point of the
# study, trained here: LoRA r = 8 on `q_proj` and `v_proj` with $B = 0$, seed 0, at the study's chosen rate, on
# questions about half of the people, for the first 100 steps; then we ask about the other half. Its loss must land
# inside the band where one more seed's run is expected (the study's 95% prediction interval at step 100). Its
# numbers vary a little from machine to machine, so nbval does not compare them; the next cell checks the band.

# %%
LIVE_STEPS = 100
before = exact_match(model, qa["test"])
lora_model, live = studies.live_run(results, "b_zero", LIVE_STEPS, model, seed=0)  # the study's own training code
after = exact_match(lora_model, qa["test"])
n = count_parameters(lora_model)
n_base = count_parameters(model).total

# %% tags=["nbval-ignore-output"]
print(f"trainable: {n.trainable:,} parameters, {100 * n.trainable / n_base:.2f}% of the base model's {n_base:,}")
print(f"live run: {LIVE_STEPS} steps at lr {results['runs']['b_zero']['lr']:g}, test answer loss {live:.3f}")
print(f"held-out Q/A exact match: {before:.1%} -> {after:.1%} ({len(qa['test'])} questions)")
for ex in qa["test"][:3]:
    print(f"  {ex.prompt!r} -> {complete(lora_model, [ex.prompt], 12)[0].split(chr(10))[0]!r} (truth {ex.response.strip()!r})")

# %%
print(studies.require_inside(results, "b_zero", LIVE_STEPS, live))

# %% [markdown]
# ## Merge: one matrix again
#
# `lora.merge` adds $\frac{\alpha}{r} BA$ into $W_0$ in place; `lora.unmerge` takes it out again. What this checks is
# that the merged model computes the same function as the adapter on top of $W_0$; that it then costs no extra time
# follows from running one matrix of $W_0$'s shape, and notebook 18 measures it. The logits must agree up to float
# rounding: float32 keeps about 7 significant digits and the logits here reach the tens,
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
# the $r$-th are zero by construction, so counting them shows nothing. What training decides is how the update
# spreads over the $r$ directions it is allowed: below, the $r = 8$ singular values of every adapted layer's
# $\Delta W$, each divided by that layer's largest.

# %%
delta = lora_model.layers[0].self_attn.q_proj.delta_weight("default").detach().double().cpu()
sv = torch.linalg.svdvals(delta)
print(f"ΔW of layers.0 q_proj: shape {tuple(delta.shape)}, numerical rank {int((sv > sv[0] * 1e-6).sum())} (r = 8)")
spectra = {name: torch.linalg.svdvals(m.delta_weight("default").detach().double().cpu())[:8]
           for name, m in lora_model.named_modules() if isinstance(m, lora.LoRALinear)}
top_share = {name: (s[0] ** 2 / (s ** 2).sum()).item() for name, s in spectra.items()}

# %% tags=["nbval-ignore-output"]
fig, ax = plt.subplots(figsize=(7, 3.4))
for name, s in spectra.items():
    ax.plot(range(1, 9), (s / s[0]).tolist(), "o-", ms=3, lw=1,
            label=name.removeprefix("layers.").replace(".self_attn.", " "))
ax.set(xlabel="singular value index (of the r = 8 allowed)", ylabel="σ_i / σ_1", ylim=(0, 1.05),
       title=f"ΔW after the live run's {LIVE_STEPS} steps, every adapted layer")
ax.legend(fontsize=7, ncol=2)
plt.tight_layout()
plt.show()
print("share of ‖ΔW‖² in the top direction: " + ", ".join(f"{v:.0%}" for v in top_share.values()))

# %% [markdown]
# After the live run's 100 steps the top direction holds between about 40% and 90% of each layer's $\lVert \Delta W
# \rVert^2$ (the printed shares, which vary a little between machines): the update is far from spread evenly over
# its 8 allowed directions, one reason a small $r$ loses less than the parameter count suggests (notebook 11
# measures ranks against each other).
#
# ## Claim check
#
# The study's claims, each with the margin it declared before running: the difference of the two set-ups' means
# over five seeds each (paired by sweep seed for the count of rates that train), its 95% Welch interval, and the
# verdict `peftlab.evidence.compare` reads off it. Below them, facts of the construction that do not vary with the
# seed, weighed by `peftlab.evidence.exact`.

# %%
display(claim_table(results))
A_init = lora.add(copy.deepcopy(model), r=8, targets=("q_proj",)).layers[0].self_attn.q_proj.lora_A["default"]
bound = 1 / math.sqrt(256)  # kaiming_uniform_(a=sqrt(5)) on fan_in k: U(-1/sqrt(k), 1/sqrt(k))
gate_B, gate_A = gate.lora_B["default"], gate.lora_A["default"]
step0 = zero[inits[0]]
display(claim_check([
    ("W' = W + A B with A d × r, B r × d", "Hu et al. eq. 3: B ∈ R^{d×r}, A ∈ R^{r×k}, W0 ∈ R^{d×k}",
     f"gate_proj: W0 {tuple(gate.base_layer.weight.shape)}, B {tuple(gate_B.shape)}, A {tuple(gate_A.shape)}",
     exact(gate_B.shape[0], gate_A.shape[1], claim="equivalent", margin=0.5).verdict),  # square: d_out = d_in
    ("training starts from the pretrained model", "B = 0 at init, so B A = 0 (section 4.1)",
     f"max |logit change| at step 0: {step0['change']:.0e}", exact(step0["change"], claim="equivalent",
                                                                    margin=1e-12).verdict),
    ("with both at zero nothing trains", "∂L/∂B ∝ A x, ∂L/∂A ∝ Bᵀ g",
     f"both zero: max |ΔW| after 20 steps {zero['both zero']['moved']:.0e}",
     exact(zero["both zero"]["moved"], claim="equivalent", margin=1e-12).verdict),
    ("A is Gaussian", "paper: Gaussian (§4.1); PEFT: Kaiming-uniform",
     f"peftlab A: max |A| = {A_init.abs().max().item():.4f}, inside the uniform bound 1/√256 = {bound:.4f}, which "
     f"a Gaussian of the same spread leaves in 8% of its draws ({A_init.numel():,} here)",
     exact(A_init.abs().max().item(), bound, claim="greater", margin=0.0).verdict),
    ("the merged model computes the same function", "W0 + (α/r) B A is one matrix of W0's shape (§4.1)",
     f"max |logit difference| merged vs unmerged, relative to the largest logit: "
     f"{'below' if merge_diff / logit_scale < 1e-5 else 'above'} 1e-5",
     exact(merge_diff / logit_scale, claim="equivalent", margin=1e-5).verdict),
]))

# %% [markdown]
# Read against the papers. Hayou et al.'s "$B = 0$ allows larger stable learning rates" is inconclusive here: the
# count of rates that train differs by -0.2 [-0.8, +0.4] (both train at three of the eight), so on this grid the
# mirror image stops training at the same rate. Their "performs better" holds: each at its own best rate, $B = 0$
# ends 0.080 nats lower (interval 0.051 to 0.108). Hu et al.'s "on par with full fine-tuning" does not hold at this
# size and budget: LoRA r = 8 on $W_q, W_v$ ends 0.136 nats above full fine-tuning (0.127 to 0.146), with 32,768
# trainable parameters against 3,297,024; notebook 20 asks what closes that gap. The rows below the study's are
# facts of the construction: the letters and shapes of the popular formula are not the paper's, the model is the
# pretrained one at step 0, two zeros never move, peftlab's $A$ is Kaiming-uniform (as PEFT's), not Gaussian, and
# the merged model computes the same function.
#
# ## Explore: the rank
#
# Move the slider: a fresh rank-$r$ LoRA on `q_proj` and `v_proj` trains for a few dozen steps on the Q/A
# task, and the panel shows the shapes of $A$ and $B$, the parameter count, the held-out accuracy and the
# singular values of the learned $\Delta W$ in layer 0. That at most $r$ of them are nonzero is true by
# construction ($\Delta W = BA$ has rank at most $r$), so the plot shows only those $r$, each divided by the
# largest: what training decides is how the update spreads over the directions it is allowed. The logic is one
# function that returns numbers; the widget only draws them, and the default rank is computed here, so the
# explorer appears at once.

# %%
views: dict[int, dict] = {}  # rank -> its view, trained once


def rank_view(r: int, steps: int = 40) -> dict:
    """Train a rank-r LoRA (q_proj, v_proj) for `steps` on Q/A; shapes, counts, accuracy, ΔW's spectrum."""
    if (r, steps) in views:
        return views[r, steps]
    m = lora.add(copy.deepcopy(model), r=r, alpha=2 * r, targets=("q_proj", "v_proj"))
    train(m, qa["train"], steps=steps, lr=3e-3, progress=False)
    layer = m.layers[0].self_attn.q_proj
    s = torch.linalg.svdvals(layer.delta_weight("default").detach().double().cpu())
    views[r, steps] = {"A": tuple(layer.lora_A["default"].shape), "B": tuple(layer.lora_B["default"].shape),
                       "trainable": count_parameters(m).trainable, "accuracy": exact_match(m, qa["test"][:48]),
                       "singular_values": s.tolist(), "rank": int((s > s[0] * 1e-6).sum())}
    return views[r, steps]


check = rank_view(8)  # the explorer's default
print(f"r = 8: A {check['A']}, B {check['B']}, {check['trainable']:,} trainable, numerical rank of ΔW {check['rank']}")

# %% [markdown]
# ![The explorer below as it first appears, at its default settings](figures/03_explorer.png)
#
# *The explorer below as it first appears, photographed in JupyterLab by `scripts/explorer_pictures.py`; run
# the cell for the live one.*

# %% tags=["explorer", "nbval-ignore-output"]
import ipywidgets as W


def show_rank(r):
    v = rank_view(r)
    within = [x / v["singular_values"][0] for x in v["singular_values"][:r]]  # the r that can be nonzero
    top = v["singular_values"][0] ** 2 / sum(x * x for x in v["singular_values"][:r])
    fig, ax = plt.subplots(figsize=(6.5, 2.8))
    ax.bar(range(1, r + 1), within, color="#4c72b0")
    ax.set(xlabel="direction (singular value index)", ylabel="σ_i / σ_1", ylim=(0, 1.05),
           title=f"r={r}: A {v['A']}, B {v['B']}, {v['trainable']:,} trainable, held-out {v['accuracy']:.0%};\n"
                 f"the top direction holds {top:.0%} of ‖ΔW‖² in layer 0's q_proj")
    fig.tight_layout()
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
# - Which factor is zero is not a convention: at its own best rate, $B = 0$ ended 0.080 nats below the mirror image
#   $A = 0$ (five seeds each, Hayou, Ghosh & Yu 2024); whether it also allows larger rates did not show on a grid
#   of factors of 3.
# - A rank-8 adapter on two projections, 0.99% of the base model's parameters, took held-out Q/A exact match from 0%
#   to 84.6% in 300 steps; full fine-tuning at the same 300 steps ended far lower in loss (0.041 against 0.178 nats).
# - Merged, it is one matrix per layer again: the same function (logits equal up to rounding), so no extra latency
#   (measured in notebook 18).
#
# **Follow-up questions to expect**
# - *Why scale by $\alpha / r$?* So the size of the update does not grow with $r$ and the learning rate can stay;
#   rsLoRA argues for $\alpha / \sqrt{r}$ at large $r$ (notebook 11).
# - *Which layers should get LoRA?* The paper adapts $W_q$ and $W_v$; QLoRA found adapting all linear layers
#   matters more than the rank (notebooks 11, 20).
# - *Why is it cheaper to train?* No gradient or optimizer state for $W_0$ (notebook 04).
# - *Can you serve many adapters on one base?* Yes, unmerged, switching per request (notebook 12).
