# %% [markdown]
# # 11 · How do you choose the LoRA rank r?
#
# **The interview question.** *"How do you pick the rank r for LoRA? Is a bigger rank better?"*
#
# **The short answer an interviewer expects**
# - Common values are 8, 16 or 64; r = 8 is often enough, and quality rarely improves much beyond it.
# - Parameters, optimizer state and the adapter file grow linearly with r; so a small r is cheap.
# - If quality is short, adapt more layers before raising r.
#
# ## The precise answer
#
# LoRA adds to a frozen weight $W_0 \in \mathbb{R}^{d_{out} \times d_{in}}$ an update of rank at most r
# (Hu et al. 2021, arXiv 2106.09685):
#
# $$h = W_0 x + \gamma_r\, B A x, \qquad A \in \mathbb{R}^{r \times d_{in}},\; B \in \mathbb{R}^{d_{out} \times r},
# \qquad \text{trainable} = r\,(d_{in} + d_{out}) \text{ per adapted layer.}$$
#
# Three results shape the choice of r, and each one qualifies the short answer:
#
# - **Hu et al., Table 6.** On GPT-3 175B, adapting $W_q$ and $W_v$, WikiSQL accuracy is 73.4 / 73.3 / 73.7 / 73.8 /
#   73.5 for r = 1 / 2 / 4 / 8 / 64: on *these* tasks, even r = 1 is enough. The same table shows that adapting
#   $W_q$ alone scores lower and needs a larger r. Section 7 explains why small ranks suffice: the top
#   directions learned at r = 8 and at r = 64 largely coincide, and the rest of the r = 64 subspace looks like noise.
# - **rsLoRA** (Kalajdzievski 2023, arXiv 2312.03732). The scaling $\gamma_r$ matters as much as r. With the
#   original $\gamma_r = \alpha / r$ and a fixed $\alpha$, the update's size and its gradients shrink as r grows,
#   so a larger rank learns no faster and ends up no better ("gradient collapse"). With $\gamma_r = \alpha/\sqrt{r}$
#   learning stays stable as r grows, and larger ranks do pay off. Part of "r = 8 is enough" is an artefact of
#   $\alpha/r$.
# - **QLoRA** (Dettmers et al. 2023, arXiv 2305.14314). In their hyperparameter search, *which* layers carry
#   adapters mattered far more than r: LoRA on every linear layer of the transformer blocks was needed to match
#   full fine-tuning, and r itself made little difference.
#
# So the rank is not chosen alone: it comes with a scaling rule and a set of target layers. Below we measure all
# three on peftlab's pretrained model with the Q/A task (questions about facts the model read in pre-training;
# notebook 10), where LoRA has to teach a new answer format.

# %%
import torch
import matplotlib.pyplot as plt
from peftlab import load_base, lora, scale
from peftlab.rank_sweep import sweep, train_rank, subspace_similarity
from peftlab.explore.rank import TABLE_HEADERS, plot_losses, table_rows
from peftlab.explore.report import table, claim_check

torch.manual_seed(0)
GPU = scale.gpu()  # PEFTLAB_SCALE=gpu opts in to the larger setting; unset: CPU, on any machine
device = "cuda" if GPU else "cpu"
# a larger setting where a GPU is present: every rank, longer training
RANKS = (1, 2, 4, 8, 16, 32, 64) if GPU else (1, 8, 64)
STEPS = 100 if GPU else 30
LR, ALPHA = 3e-3, 16

base = load_base(device=device)
print(f"ranks {RANKS}, {STEPS} steps, lr {LR}, alpha {ALPHA}, targets q_proj + v_proj, Q/A task")

# %% [markdown]
# ## Run it: one adapter per rank, scaling alpha / r
#
# `sweep` trains one LoRA per rank on a fresh copy of the base model (same data order and steps for every rank),
# saves each adapter with `lora.save` to measure its file, and evaluates exact-match accuracy on the Q/A test
# split (people whose questions never appear in training).

# %%
rows = sweep(RANKS, "alpha/r", "q_proj,v_proj", STEPS, LR, alpha=ALPHA, base=base, keep_models=True)
by_rank = {row["rank"]: row for row in rows}
display(table(table_rows(rows), TABLE_HEADERS))
for row in rows:
    assert row["trainable"] == row["closed_form"]  # r * (in + out) per adapted layer, exactly
print(f"trainable parameters = r * {rows[0]['trainable'] // rows[0]['rank']:,} "
      f"(8 layers x (256 + 256)); adapter file +{(rows[-1]['adapter_kb'] - rows[0]['adapter_kb']) / (rows[-1]['rank'] - rows[0]['rank']):.1f} KiB per unit of r")

# %% [markdown]
# Parameters and the adapter file grow exactly linearly in r (4 bytes per fp32 parameter, plus a small JSON
# config). The step time hardly moves: on a model this small, the frozen base's forward and backward pass
# dominate, and two skinny extra matrices per layer barely register.
#
# ## alpha / r against alpha / sqrt(r)
#
# Same ranks, same steps, now with the rsLoRA scaling. At r = 1 the two rules are the same ($\sqrt{1} = 1$), so
# that run is shared; we compare the training loss at the end (mean of the last 5 steps).

# %%
rs_rows = sweep([r for r in RANKS if r > 1], "alpha/sqrt(r)", "q_proj,v_proj", STEPS, LR, alpha=ALPHA, base=base,
                evaluate=False)
final = {"alpha/r": {r: by_rank[r]["final_loss"] for r in RANKS},
         "alpha/sqrt(r)": {1: by_rank[1]["final_loss"], **{row["rank"]: row["final_loss"] for row in rs_rows}}}
display(table([(r, f"{ALPHA / r:.3g}", f"{final['alpha/r'][r]:.3f}", f"{ALPHA / r ** 0.5:.3g}",
                f"{final['alpha/sqrt(r)'][r]:.3f}") for r in RANKS],
              ["rank", "scaling alpha/r", "final loss", "scaling alpha/sqrt(r)", "final loss"]))

# %%
fig, (ax_final, ax_r, ax_rs) = plt.subplots(1, 3, figsize=(13, 3.4))
for rule, marker in (("alpha/r", "o-"), ("alpha/sqrt(r)", "s-")):
    ax_final.plot(RANKS, [final[rule][r] for r in RANKS], marker, label=rule)
ax_final.set_xscale("log", base=2)
ax_final.set_xticks(RANKS, [str(r) for r in RANKS])
ax_final.set_xlabel("rank r"); ax_final.set_ylabel(f"train loss after {STEPS} steps")
ax_final.set_title("final loss against r"); ax_final.legend()
plot_losses(ax_r, {r: by_rank[r]["loss"] for r in RANKS}, "scaling alpha / r")
plot_losses(ax_rs, {1: by_rank[1]["loss"], **{row["rank"]: row["loss"] for row in rs_rows}}, "scaling alpha / sqrt(r)")
ax_rs.set_ylim(ax_r.get_ylim())
plt.tight_layout(); plt.show()

# %% [markdown]
# With alpha / r, the curves of the larger ranks lie on top of each other: multiplying r by 8 divides the
# scaling by 8, and the extra directions buy nothing at a fixed number of steps. With alpha / sqrt(r) the larger
# ranks learn faster and reach a lower loss, as rsLoRA predicts. Note what this does *not* settle: alpha/sqrt(r)
# also gives the larger ranks a larger effective step, which one could get from alpha / r by raising alpha or
# the learning rate for each rank; rsLoRA's point is that with alpha/sqrt(r) one setting serves every rank.
#
# ## Which layers, or which rank?
#
# QLoRA's observation, tested: one rank-1 adapter on *every* linear layer (q, k, v, o, gate, up, down) against
# rank 64 on q and v only.

# %%
_, wide = train_rank(base, 1, "alpha/r", "all-linear", STEPS, LR, alpha=ALPHA)
narrow = by_rank[max(RANKS)]
display(table([(f"q_proj, v_proj, r={narrow['rank']}", f"{narrow['trainable']:,}", f"{narrow['test_loss']:.3f}",
                f"{narrow['accuracy']:.1%}"),
               ("all-linear, r=1", f"{wide['trainable']:,}", f"{wide['test_loss']:.3f}", f"{wide['accuracy']:.1%}")],
              ["adapter", "trainable", "test loss", "test accuracy"]))
print(f"all-linear r=1 has {wide['trainable'] / narrow['trainable']:.1%} of the parameters of q,v r={narrow['rank']}")

# %% [markdown]
# One direction in each of the seven projections of every block does more for this task than 64 directions in two
# of them, with a fraction of the parameters: where an adapter sits limits what it can change more than its rank
# does.
#
# ## Do rank 8 and rank 64 learn the same directions?
#
# Hu et al. (section 7) compare the subspaces spanned by the top singular directions of the learned $A$
# matrices. With $U$ and $V$ the right-singular vectors of $A_{r=8}$ and $A_{r=64}$ (directions in the layer's
# input space, ordered by singular value) and $U_i$ the top $i$ of them,
#
# $$\phi(A_{r=8}, A_{r=64}, i, j) = \frac{\lVert U_i^\top V_j \rVert_F^2}{\min(i, j)} \in [0, 1],$$
#
# 1 when one subspace contains the other, 0 when they are orthogonal. As a baseline, random matrices of the
# same shapes (the adapters start from random A, so this is also where they began): for random subspaces of
# $\mathbb{R}^{256}$ the expectation is $\max(i, j) / 256$.

# %%
def lora_A(model):
    """Each adapted layer's A, (r, in), by layer name."""
    return {n: m.lora_A["default"].detach().cpu() for n, m in model.named_modules() if isinstance(m, lora.LoRALinear)}

A8, A64 = lora_A(by_rank[8]["model"]), lora_A(by_rank[64]["model"])
phi = {n: subspace_similarity(A8[n], A64[n]) for n in A8}
g = torch.Generator().manual_seed(0)
phi_random = torch.stack([subspace_similarity(torch.randn(8, 256, generator=g), torch.randn(64, 256, generator=g))
                          for _ in range(len(A8))]).mean(0)

# phi(1, 1) by hand: the squared cosine between the two top directions
LAYERS = ("layers.3.self_attn.q_proj", "layers.3.self_attn.v_proj")  # the last block; the paper's Figure 3 also shows one layer, Wq and Wv
u1 = torch.linalg.svd(A8[LAYERS[0]].double(), full_matrices=False).Vh[0]
v1 = torch.linalg.svd(A64[LAYERS[0]].double(), full_matrices=False).Vh[0]
torch.testing.assert_close(float((u1 @ v1) ** 2), phi[LAYERS[0]][0, 0].item(), rtol=1e-4, atol=1e-6)

display(table([(n.removeprefix("layers."), f"{p[0, 0]:.3f}", f"{p[0, 63]:.3f}", f"{p[7, 63]:.3f}") for n, p in phi.items()]
              + [("random baseline", f"{phi_random[0, 0]:.3f}", f"{phi_random[0, 63]:.3f}", f"{phi_random[7, 63]:.3f}")],
              ["layer", "phi(1, 1): top directions", "phi(1, 64)", "phi(8, 64)"]))
top_overlap = sum(p[0, 0].item() for p in phi.values()) / len(phi)
print(f"top-direction overlap phi(1,1), mean over {len(phi)} layers: {top_overlap:.3f} "
      f"(random: {phi_random[0, 0]:.3f})")

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 2.6))
panels = [(n, phi[n]) for n in LAYERS] + [("random baseline", phi_random)]
for ax, (title, p) in zip(axes, panels):
    im = ax.imshow(p.numpy(), vmin=0, vmax=1, cmap="magma", aspect="auto", origin="lower",
                   extent=(0.5, 64.5, 0.5, 8.5))
    ax.set_title(title, fontsize=10); ax.set_xlabel("j (top directions of r=64)"); ax.set_ylabel("i (of r=8)")
fig.colorbar(im, ax=axes, label="phi(i, j)")
plt.show()

# %% [markdown]
# The top direction that the rank-8 adapter learned is, in most layers, found again among the top directions of
# the rank-64 adapter, far above what two random subspaces share; further down the spectrum the overlap falls
# towards the random level. The extra 56 directions of r = 64 add little that r = 8 did not find, which is Hu et
# al.'s argument for small ranks. (Our adapters trained for only a few dozen steps from random A, so part of each
# A is still its random start; the paper's adapters trained to convergence.)
#
# ## Claim check

# %%
acc = {r: by_rank[r]["accuracy"] for r in RANKS}
gain_r = 1 - final["alpha/r"][64] / final["alpha/r"][8]
gain_rs = 1 - final["alpha/sqrt(r)"][64] / final["alpha/sqrt(r)"][8]
display(claim_check([
    ("r = 8 is often enough", "Hu Table 6: WikiSQL 73.8 (r=8) vs 73.5 (r=64), GPT-3, Wq+Wv",
     f"accuracy {acc[8]:.1%} (r=8) vs {acc[64]:.1%} (r=64)", acc[8] >= acc[64] - 0.03),
    ("even r = 1 is enough", "Hu Table 6: 73.4 (r=1) vs 73.8 (r=8) on WikiSQL",
     f"accuracy {acc[1]:.1%} (r=1) vs {acc[8]:.1%} (r=8) after {STEPS} steps", acc[1] >= acc[8] - 0.03),
    ("with alpha/r a larger r learns no better; alpha/sqrt(r) keeps gaining", "rsLoRA (arXiv 2312.03732)",
     f"loss r=8 → 64: {gain_r:.1%} lower (alpha/r), {gain_rs:.1%} lower (alpha/sqrt(r))",
     gain_r < 0.05 and gain_rs > 0.10),
    ("which layers matters more than r", "QLoRA: all linear layers needed, r has little effect",
     f"all-linear r=1 ({wide['trainable']:,} params) {wide['accuracy']:.1%} vs q,v r=64 "
     f"({narrow['trainable']:,}) {narrow['accuracy']:.1%}", wide["accuracy"] > narrow["accuracy"]),
    ("r=8 and r=64 share their top directions", "Hu section 7, Figure 3",
     f"mean phi(1,1) {top_overlap:.2f} vs random {phi_random[0, 0]:.3f}", top_overlap > 10 * phi_random[0, 0].item()),
]))

# %% [markdown]
# ## Explore: a rank sweep, live
#
# Pick ranks, the scaling rule, the target layers, steps and learning rate, and press **Run**: one LoRA per rank
# trains on a fresh copy of the base model while the loss curves draw; the table fills in as each rank finishes
# (parameters, adapter file, step time, test accuracy). **Stop** ends the sweep after the current step. Try
# alpha/r against alpha/sqrt(r) at ranks 1, 8, 64, or "all-linear" at rank 1 against "q_proj,v_proj" at rank 64.

# %% tags=["nbval-skip"]
from peftlab.explore.rank import RankSweep
RankSweep(base).show()

# %% [markdown]
# ## Takeaways for the interview
#
# - Cost is linear in r: parameters, optimizer state and the adapter file are all r × (d_in + d_out) per layer;
#   step time barely changes on small models.
# - "r = 8 is enough" holds when the task needs a low-rank change and the scaling is alpha / r; measured here,
#   r = 8 matched r = 64 but r = 1 fell short at a fixed, short budget.
# - The scaling rule interacts with r: with alpha / r a larger rank learns no faster; with rsLoRA's alpha / sqrt(r)
#   larger ranks pay off. When sweeping r, fix alpha / sqrt(r) (or retune the learning rate per rank).
# - Adapting more layers beats raising r: here rank 1 on every linear layer beat rank 64 on q and v with fewer
#   than a tenth of the parameters.
# - Rank 8 and rank 64 adapters find the same top directions; most of the extra rank goes unused.
#
# **Follow-up questions to expect**
# - *How would you choose r in practice?* Start at 8 or 16 on all linear layers, sweep r on a validation set with
#   alpha / sqrt(r) (or alpha = 2r), and raise r only when the task is far from pre-training (notebook 20).
# - *What does alpha do?* It scales the update; with alpha / r, raising r at fixed alpha shrinks the update per
#   direction, which is why r and alpha are tuned together.
# - *Can you measure the rank a task needs?* Look at the singular values of the learned B A, or at the subspace
#   similarity between two ranks as above; full fine-tuning's weight changes have much higher rank (notebook 08).
