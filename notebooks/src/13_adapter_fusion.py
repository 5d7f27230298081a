# %% [markdown]
# # 13 · What is AdapterFusion?
#
# **The interview question.** *"What is AdapterFusion, and how does it differ from merging adapters?"*
#
# **The short answer an interviewer expects**
# - Train one small adapter per task first; then learn, in every layer, an attention over the adapters' outputs
#   that decides how much of each to use, per token.
# - Two stages: the task adapters are frozen while the fusion layer trains, so no task overwrites another.
# - Unlike a fixed merge, the mix depends on the input.
#
# ## The precise answer
#
# **Bottleneck adapters** (Houlsby et al. 2019, arXiv 1902.00751): after a sublayer with output $h$, a small
# network with bottleneck $m \ll d$ is added, $h + W_\text{up}\, f(W_\text{down} h + b_\text{down}) + b_\text{up}$:
# $2dm + m + d$ parameters per place. Houlsby et al. initialise both projections with small random weights near zero,
# so that each adapter starts as an approximate identity; peftlab sets $W_\text{up}$ and $b_\text{up}$ exactly to
# zero, its own choice, so the model starts exactly unchanged. On GLUE, BERT-large
# with adapters came within 0.4% of full fine-tuning while training 3.6% of the parameters per task.
#
# **AdapterFusion** (Pfeiffer et al. 2021, arXiv 2005.00247) composes $N$ such adapters in two stages:
#
# 1. *Knowledge extraction*: train one adapter per task, each on its own data (the paper: 16 NLU tasks).
# 2. *Knowledge composition*: freeze the base and every adapter; in each layer add a fusion layer and train only
#    it on the target task. Per token, with $a_n$ the output of adapter $n$:
#
# $$s_n = \operatorname{softmax}_n\big((Q h)^\top (K a_n)\big), \qquad \text{out} = h + \sum_n s_n\, V a_n,$$
#
# with $Q, K, V \in \mathbb{R}^{d \times d}$: $3d^2$ parameters per layer. The paper starts $V$ at the identity
# (plus small noise) and adds a regularisation loss $\lambda \sum_l \lVert I - V_l \rVert^2$ that keeps every $V$
# close to it, so that fusion mixes the adapters' outputs rather than rewriting them. peftlab starts $V$ the same
# way but leaves the regulariser out (`peftlab/adapters.py` says so): here $V$ trains freely.
#
# What the short answer leaves out: the fusion layer is not small. With $d = 256$ and $m = 32$, one fusion layer has
# $3d^2 = 196{,}608$ parameters and one adapter $2dm + m + d = 16{,}672$; the paper's BERT-base has $d = 768$, where
# fusion costs 1.8M parameters per layer. And the routing is learned, so it is only as good as the stage-2 data:
# if one domain dominates that data, fusion can learn to prefer its adapter everywhere.
#
# Below: stage 1 on SQL and on Python, stage 2 on a task that mixes both, and a comparison with each single
# adapter and with two LoRA adapters merged into one (notebook 12).

# %%
import matplotlib.pyplot as plt
import torch

from peftlab import adapters, count_parameters, data, load_base, lora, scale
from peftlab.multitask import (by_domain, combine_scores, fusion_weights_for, mean_fusion_weights, mixed_task,
                               scores_by_domain, train_adapters)
from peftlab.explore.plots import plot_fusion_weights
from peftlab.explore.report import claim_check, table
from peftlab.train import train

torch.manual_seed(0)
GPU = scale.gpu()  # PEFTLAB_SCALE=gpu opts in to the larger setting; unset: CPU, on any machine
device = "cuda" if GPU else "cpu"
# training steps: stage 1 per adapter, stage 2, and each LoRA adapter; a larger setting where a GPU is present
STEPS, FUSION_STEPS, LORA_STEPS, BATCH = (300, 200, 300, 16) if GPU else (50, 50, 30, 8)
M, PLACEMENT = 32, ("attn", "mlp")  # bottleneck size; after attention and after the MLP, as in Houlsby
METRICS = ("token_accuracy", "loss")

model = load_base(device=device)
base_total = count_parameters(model).total
sql, python = data.sql_task(), data.python_task()
mixed = mixed_task(("sql", "python"), balanced=True)  # as many SQL as Python examples in every split
test = by_domain(mixed["test"])
print({k: len(v) for k, v in mixed.items()}, "mixed examples;", {d: len(v) for d, v in test.items()}, "test by domain")
print(repr(mixed["train"][0].text))

# %% [markdown]
# ## Stage 1: one bottleneck adapter per task
#
# `adapters.add` puts an adapter after the attention and after the MLP of every layer and freezes everything
# else; `train_adapters` trains the SQL adapter on SQL only and the Python adapter on Python only.

# %% tags=["nbval-ignore-output"]
add = lambda m, name: adapters.add(m, bottleneck=M, name=name, placement=PLACEMENT)
hists = train_adapters(model, {"sql": sql["train"], "python": python["train"]}, add, steps=STEPS, lr=1e-2,
                       batch_size=BATCH)
per_adapter = count_parameters(model).trainable
for name, h in hists.items():
    print(f"{name:6s} adapter: {h.steps} steps, loss {h.loss[0]:.3f} -> {h.loss[-1]:.3f}")
print(f"one adapter: {per_adapter:,} parameters ({100 * per_adapter / base_total:.2f}% of the base), "
      f"= n_layers × 2 places × (2·d·m + m + d) = {4 * 2 * (2 * 256 * M + M + 256):,}")


def evaluate(m):
    """Token accuracy and loss on the answer tokens, per domain of the mixed test set (as in notebook 12)."""
    return {metric: scores_by_domain(m, mixed["test"], metric) for metric in METRICS}


results = {}
with adapters.disabled(model):
    results["base model"] = evaluate(model)
for name in ("sql", "python"):
    adapters.set_active(model, name)
    results[f"{name} adapter alone"] = evaluate(model)

# %% [markdown]
# ## Stage 2: fuse, and train only the fusion on the mixed task
#
# `add_fusion` adds one fusion layer next to each adapter, makes it active and freezes the rest, the adapters
# included. At initialisation $Q$ and $K$ are small and $V$ is the identity, so fusion starts as an almost
# equal average of the two adapters' outputs: we score that too.

# %% tags=["nbval-ignore-output"]
adapters.add_fusion(model, ["sql", "python"], name="fusion")
fusion_params = count_parameters(model).trainable
frozen = {k: v.clone() for k, v in model.state_dict().items() if ".fusions." not in k}
results["fusion at init (≈ average)"] = evaluate(model)
hist = train(model, mixed["train"], steps=FUSION_STEPS, lr=1e-3, batch_size=BATCH, progress=False)
adapters_unchanged = all(torch.equal(v, frozen[k]) for k, v in model.state_dict().items() if k in frozen)
results["AdapterFusion (trained)"] = evaluate(model)
print(f"fusion: {fusion_params:,} trainable parameters ({100 * fusion_params / base_total:.1f}% of the base), "
      f"= n_layers × 2 places × 3·d² = {4 * 2 * 3 * 256 ** 2:,}")
print(f"{hist.steps} fusion steps, loss {hist.loss[0]:.3f} -> {sum(hist.loss[-10:]) / 10:.3f}")
print("base and both adapters unchanged by stage 2:", adapters_unchanged)

# %% [markdown]
# ## The alternative without a second stage: two LoRA adapters merged into one
#
# The same two tasks, one rank-8 LoRA each on every linear layer (as in notebook 12), combined with
# `lora.combine(method="cat")`: the exact sum of both updates, rank 16, one fixed adapter for every input.

# %%
lora_model = load_base(device=device)
add_lora = lambda m, name: lora.add(m, r=8, alpha=16, targets="all-linear", name=name)
train_adapters(lora_model, {"sql": sql["train"], "python": python["train"]}, add_lora, steps=LORA_STEPS, lr=5e-3,
               batch_size=BATCH)
per_lora = count_parameters(lora_model).trainable
cat = {metric: combine_scores(lora_model, {"sql": 1.0, "python": 1.0}, test, method="cat", metric=metric)
       for metric in METRICS}
results["merged LoRA (cat, 1 + 1)"] = {metric: dict(sorted(r["scores"].items())) for metric, r in cat.items()}
print(f"one LoRA adapter: {per_lora:,} parameters; merged (cat): rank {cat['loss']['r']}, "
      f"{cat['loss']['parameters']:,} parameters, exact sum (max rel. error < 1e-6): {cat['loss']['max_error'] < 1e-6}")

# %% [markdown]
# ## Measure: every method on both halves of the mixed test set
#
# "Oracle routing" is each domain answered by its own adapter: the ceiling for any way of combining the two.

# %% tags=["nbval-ignore-output"]
results["oracle routing (own adapter per domain)"] = {
    metric: {d: results[f"{d} adapter alone"][metric][d] for d in sorted(test)} for metric in METRICS}
params = {"base model": (0, 0), "sql adapter alone": (per_adapter, 0), "python adapter alone": (per_adapter, 0),
          "fusion at init (≈ average)": (2 * per_adapter, 0),
          "AdapterFusion (trained)": (2 * per_adapter, fusion_params),
          "merged LoRA (cat, 1 + 1)": (2 * per_lora, 0),
          "oracle routing (own adapter per domain)": (2 * per_adapter, 0)}
rows = [(name, f"{r['token_accuracy']['sql']:.1%}", f"{r['token_accuracy']['python']:.1%}",
         f"{r['loss']['sql']:.3f}", f"{r['loss']['python']:.3f}", f"{params[name][0]:,}", f"{params[name][1]:,}")
        for name, r in results.items()]
display(table(rows, ["method", "SQL token accuracy", "Python token accuracy", "SQL loss", "Python loss",
                     "stage-1 parameters", "stage-2 parameters"]))

# %%
names = list(results)
x = range(len(names))
fig, ax = plt.subplots(figsize=(10, 3.4))
for offset, (d, color) in zip((-0.2, 0.2), (("sql", "#4c72b0"), ("python", "#dd8452"))):
    ax.bar([i + offset for i in x], [results[n]["token_accuracy"][d] for n in names], width=0.4, color=color,
           label=f"{d} half")
ax.set_xticks(list(x), [n.replace(" (", "\n(").replace(" alone", "\nalone") for n in names], fontsize=7)
ax.set(ylabel="token accuracy", ylim=(0, 1.05), title="Mixed SQL + Python test set, per domain")
ax.legend()
plt.show()

# %% [markdown]
# Read the table with its budgets in mind. Oracle routing is the fair ceiling: each domain answered by its own
# adapter. Fusion's second stage trained a large number of parameters (the $V$ matrices included) on the mixed data
# itself, while the merged LoRA never saw the mixed data: it is a fixed sum of two updates, each applied to every
# input, which is the interference notebook 12 measured. Fusion at init, an almost equal average of the two adapters,
# shows what mixing without learned routing gives.
#
# ## Does fusion route each input to the matching adapter?
#
# `adapters.fusion_weights` records the softmax weights $s_n$ of every fusion layer during one forward pass; we
# show their mean over the tokens of one SQL and one Python test example, per fusion layer (in forward order:
# layer 0 after attention, layer 0 after the MLP, layer 1 after attention, ...).

# %% tags=["nbval-ignore-output"]
sql_example, python_example = test["sql"][0], test["python"][0]
fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
for ax, ex in zip(axes, (sql_example, python_example)):
    w = fusion_weights_for(model, ex.text)  # (layers, tokens, adapters)
    plot_fusion_weights(w.unsqueeze(1), ["sql", "python"], ax=ax)
    ax.set_title(f"{ex.meta['domain']} input: {ex.prompt.strip()[:28]}…", fontsize=9)
plt.tight_layout()
plt.show()

means = mean_fusion_weights(model, mixed["test"])  # domain -> mean weight on [sql, python]
matching = {d: means[d][["sql", "python"].index(d)] for d in means}
for d in means:
    print(f"{d:6s} test inputs: mean fusion weight on the {d} adapter {matching[d]:.2f}, "
          f"on the other {1 - matching[d]:.2f}")

# %% [markdown]
# The weights are per token and per layer, so a sequence can lean on one adapter in one layer and on the other
# elsewhere; the heatmaps show means. Remember too that $V$ was trained as well: the fusion layer can reshape an
# adapter's output, not only choose it.
#
# ## Claim check

# %% tags=["nbval-ignore-output"]
fusion, own = results["AdapterFusion (trained)"], results["oracle routing (own adapter per domain)"]
worst = lambda r: min(r["token_accuracy"].values())  # the weaker domain's token accuracy
gap = {d: fusion["token_accuracy"][d] - own["token_accuracy"][d] for d in ("sql", "python")}
merged_lora = results["merged LoRA (cat, 1 + 1)"]
display(claim_check([
    ("two stages: adapters first, then fusion with adapters frozen", "Pfeiffer et al. 2021, 16 NLU tasks",
     f"stage 2 left the base and both adapters bit-identical: {adapters_unchanged}", adapters_unchanged),
    ("fusion picks the matching adapter per input", "attention over adapter outputs, query = layer output",
     f"mean weight on the matching adapter: SQL {matching['sql']:.2f}, Python {matching['python']:.2f}",
     min(matching.values()) > 0.5),
    ("fusion does as well as the matching adapter", "stage 2 learns to use the adapters best for the target task",
     "fusion minus own adapter: " + ", ".join(f"{d} {100 * gap[d]:+.1f} points" for d in gap),
     "holds (within 5 points)" if min(gap.values()) >= -0.05 else "not quite: see the weaker domain"),
    ("fusion beats a fixed merge", "(not in the paper; notebook 12's merge)",
     f"worst domain: fusion {worst(fusion):.0%}, merged LoRA (cat) {worst(merged_lora):.0%}",
     worst(fusion) >= worst(merged_lora)),
    ("fusion is a light layer on top", "3·d² per layer (Q, K, V)",
     f"fusion {fusion_params:,} vs one adapter {per_adapter:,} parameters",
     "holds" if fusion_params < per_adapter else "does not hold: the fusion outweighs the adapters"),
]))

# %% [markdown]
# Houlsby et al. report adapters within 0.4% of full fine-tuning on GLUE with 3.6% of the parameters per task;
# the GLUE gap is not measured here (the adapters' parameter share and own-task accuracy are in the tables above).

# %% [markdown]
# ## Explore: fusion weights for any input
#
# Pick a test input or type your own; the panel shows the mean fusion weight per layer and adapter, and the weight
# on the SQL adapter token by token in every layer. Try a Python prompt with SQL words in it, or a plain English
# sentence that belongs to neither domain. The function returns numbers; the widget only draws them.

# %% tags=["nbval-ignore-output"]
def fusion_view(text: str) -> dict:
    """Per-layer mean fusion weights and per-token weight on the SQL adapter for one input."""
    w = fusion_weights_for(model, text)  # (layers, tokens, [sql, python])
    return {"tokens": list(text), "per_layer": w.mean(1).tolist(), "sql_per_token": w[..., 0].tolist()}


view = fusion_view("-- Which people live in Varn?\n")
print("mean weight on [sql, python] per layer:", [[round(v, 2) for v in row] for row in view["per_layer"]])

# %% [markdown]
# Read the per-layer weights of this SQL prompt against the claim row "fusion picks the matching adapter": in this
# run several of the eight fusion layers give most of their weight to the *Python* adapter. The claim holds for the
# mean over layers and tokens, not layer by layer, and with $V$ trained without the paper's regulariser a layer can
# use the "wrong" adapter's output as raw material rather than as that task's answer.

# %% [markdown]
# ![The explorer below as it first appears, at its default settings](figures/13_explorer.png)
#
# *The explorer below as it first appears, photographed in JupyterLab by `scripts/explorer_pictures.py`; run
# the cell for the live one.*

# %% tags=["explorer", "nbval-ignore-output"]
import ipywidgets as W

choices = {f"{e.meta['domain']}: {e.prompt.strip()[:50]}": e.text for e in test["sql"][:5] + test["python"][:5]}


def show_fusion(text):
    v = fusion_view(text)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 2.8), gridspec_kw={"width_ratios": [1, 3]})
    plot_fusion_weights(torch.tensor(v["per_layer"])[:, None, None], ["sql", "python"], ax=ax1)
    image = ax2.imshow(v["sql_per_token"], vmin=0, vmax=1, cmap="coolwarm", aspect="auto")
    ax2.set_xticks(range(len(v["tokens"])), [repr(c)[1:-1] for c in v["tokens"]], fontsize=6)
    ax2.set(ylabel="fusion layer", title="weight on the SQL adapter, per token (1 = SQL, 0 = Python)")
    fig.colorbar(image, ax=ax2)
    plt.tight_layout()
    plt.show()


picker = W.Dropdown(options=choices, description="input", layout=W.Layout(width="600px"))
custom = W.Text(placeholder="or type an input and press Enter", continuous_update=False,
                layout=W.Layout(width="600px"))
out = W.Output()


def redraw(text):
    with out:
        out.clear_output(wait=True)
        show_fusion(text)


picker.observe(lambda change: redraw(change["new"]), names="value")
custom.observe(lambda change: redraw(change["new"]) if change["new"] else None, names="value")
display(W.VBox([picker, custom, out]))
redraw(picker.value)

# %% [markdown]
# ## Takeaways for the interview
#
# - AdapterFusion = stage 1, one adapter per task, trained alone; stage 2, a per-layer attention over the frozen
#   adapters' outputs, trained on the target task. Measured here: stage 2 leaves every adapter bit-identical.
# - The mix is per token and input-dependent, unlike a merge, which applies a fixed sum of updates to every input.
# - The fusion layer is $3d^2$ per adapted place, far larger than the adapters it combines; at our size all fusion
#   layers together hold a large share of the base model's parameter count (printed above).
# - Bottleneck adapters add a little depth to every forward pass, and fusion runs every adapter; a merged LoRA adds
#   nothing once folded into the weights (notebook 18).
#
# **Follow-up questions to expect**
# - *Why two stages rather than multi-task training?* Training tasks jointly can let one overwrite another
#   (interference) and needs all data at once; separate adapters can be trained, shared and reused independently.
# - *How does this compare with a mixture of LoRA experts or a router?* Same idea at another granularity: a learned
#   gate over several adapters; fusion's gate is attention with the layer output as the query.
# - *What happens with a task neither adapter covers?* Fusion can only mix what the adapters learned; measure it.
