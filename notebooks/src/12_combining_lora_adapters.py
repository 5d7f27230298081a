# %% [markdown]
# # 12 · How do you combine LoRA adapters?
#
# **The interview question.** *"You have one LoRA adapter per task. How do you serve them together, and can you
# merge them into one?"*
#
# **The short answer an interviewer expects**
# - Keep one frozen base and load several adapters; switch the active one per request, no reload.
# - Or merge them: a weighted sum of their updates, $W_0 + \sum_i w_i \Delta W_i$, one model for every task.
# - Merging can cost quality: the tasks *interfere*, each one's update disturbs the other's inputs.
#
# ## The precise answer
#
# Each adapter $i$ is a pair $(A_i, B_i)$ with scale $s_i = \alpha_i / r_i$ and update
# $\Delta W_i = s_i B_i A_i$ (Hu et al. 2021, arXiv 2106.09685). *Switching* changes which pair the layers use;
# the base is shared and nothing is recomputed. *Combining* builds one new pair $(A, B)$ from weights $w_i$;
# Hugging Face PEFT's `add_weighted_adapter` offers these, and `lora.combine` implements the first three:
#
# | method | new $A$, $B$ | rank | $BA$ equals $\sum_i w_i \Delta W_i$? |
# |---|---|---|---|
# | `cat` | $A = [A_1; A_2]$, $B = [w_1 s_1 B_1,\ w_2 s_2 B_2]$ | $r_1 + r_2$ | exactly |
# | `linear` | $A = \sum_i \sqrt{w_i s_i} A_i$, $B = \sum_i \sqrt{w_i s_i} B_i$ | $r$ (equal ranks needed) | no: cross terms $B_1 A_2$, $B_2 A_1$ |
# | `svd` | best rank-$k$ factorisation of $\sum_i w_i \Delta W_i$ (Eckart-Young) | $k$ | up to the truncation error |
#
# For a negative weight (task negation), `linear` puts the sign on $A$ only, $\operatorname{sign}(w_i)\sqrt{|w_i s_i|}\,A_i$,
# as PEFT does, so the cross terms agree with PEFT's; `tests/test_lora.py` checks both against PEFT 0.21. One
# difference remains, and peftlab's is the right side of it: with rsLoRA adapters PEFT gives the combined adapter
# the scaling $\alpha/\sqrt{r} = \sqrt{r}$ (its new $\alpha$ is $r$), on top of factors that already carry the
# scales, so its update is $\sqrt{r}$ times the combination; `lora.combine` gives the new adapter scaling 1.
#
# PEFT also offers TIES (Yadav et al. 2023, arXiv 2306.01708: trim small entries, elect a sign per entry,
# average the agreeing ones) and DARE (Yu et al. 2023, arXiv 2311.03099: drop entries at random and rescale the
# rest); both try to reduce interference between the updates. Note where PEFT applies them: its `ties`,
# `dare_linear` and `dare_ties` combinations trim, drop and elect on the $A$ and $B$ factors separately, and only the
# `*_svd` variants (`ties_svd`, `dare_linear_svd`, ...) act on the product $\Delta W$, the task vector the papers
# work on. They are not measured here yet.
#
# What the short answer leaves out: merging into the base weights, $W_0 + \sum_i w_i \Delta W_i$ (each adapter
# merged at its weight), is always exactly the weighted sum. The caveat is about building one new low-rank
# adapter $(A, B)$ that stands for the sum: `cat` does so exactly, at rank $r_1 + r_2$; `linear` keeps rank $r$ but
# multiplies sums of factors, so its $BA$ carries cross terms; `svd` approximates at the rank it is given. And any
# merged model applies *every* task's update to *every* input, which is where interference comes from. Below we train two adapters, switch between them, merge them every way, and
# measure both tasks under each merge.

# %%
import copy

import matplotlib.pyplot as plt
import torch

from peftlab import count_parameters, data, load_base, lora, scale
from peftlab.evaluate import complete
from peftlab.explore.combine import CombineExplorer
from peftlab.explore.report import claim_check, table
from peftlab.multitask import combine_scores, score, train_adapters

torch.manual_seed(0)
GPU = scale.gpu()  # PEFTLAB_SCALE=gpu opts in to the larger setting; unset: CPU, on any machine
device = "cuda" if GPU else "cpu"
STEPS, BATCH = (300, 16) if GPU else (40, 8)  # per adapter; a larger setting where a GPU is present
R = 8
METRICS = ("token_accuracy", "loss")

model = load_base(device=device)
sql, python = data.sql_task(), data.python_task()
tests = {"sql": sql["test"], "python": python["test"]}
print(f"SQL: {len(sql['train'])} train / {len(sql['test'])} test;  Python: {len(python['train'])} train / "
      f"{len(python['test'])} test")
print(repr(sql["train"][0].text))
print(repr(python["train"][0].text))

# %% [markdown]
# ## Two adapters on one base
#
# One rank-8 LoRA per task on every linear layer of the attention and the MLP, each trained alone (the other
# one is frozen while it trains). `train_adapters` adds and trains them in turn with the one training loop.

# %% tags=["nbval-ignore-output"]
add = lambda m, name: lora.add(m, r=R, alpha=2 * R, targets="all-linear", name=name)
hists = train_adapters(model, {"sql": sql["train"], "python": python["train"]}, add, steps=STEPS, lr=5e-3,
                       batch_size=BATCH)
for name, h in hists.items():
    print(f"{name:6s} adapter: {h.steps} steps in {h.wall_time:.1f} s, loss {h.loss[0]:.3f} -> {h.loss[-1]:.3f}")
per_adapter = count_parameters(model).trainable  # the active adapter's parameters
print(f"adapters: {lora.adapter_names(model)}, {per_adapter:,} parameters each "
      f"({100 * per_adapter / count_parameters(load_base()).total:.2f}% of the base model)")

# %% [markdown]
# ## Switching at run time
#
# The same model object answers both kinds of request: `lora.set_active` picks the adapter, `lora.disabled`
# runs the base. Nothing is reloaded or recomputed.

# %% tags=["nbval-ignore-output"]
prompts = {"sql": sql["test"][0].prompt, "python": python["test"][0].prompt}


def show_answers(label):
    print(f"--- {label}")
    for task, n_lines in (("sql", 1), ("python", 2)):
        answer = complete(model, [prompts[task]], 70)[0]
        print(prompts[task] + "\n".join(answer.split("\n")[:n_lines]))


with lora.disabled(model):
    show_answers("base model (lora.disabled)")
for name in ("sql", "python"):
    lora.set_active(model, name)
    show_answers(f"active adapter: {name}")

# %% [markdown]
# Each adapter on each task, two measures on the answer tokens of the test set: the *token accuracy* (the share of
# answer tokens that are the model's top prediction given the reference before them, one forward pass) and the
# loss. Exact match of whole generated answers needs far more training than fits in a minute on a CPU; the token
# measures move long before it does. Each adapter is good at its own task only.

# %% tags=["nbval-ignore-output"]
def both_tasks(m):
    return {k: {metric: score(m, v, metric) for metric in METRICS} for k, v in tests.items()}


single = {}
with lora.disabled(model):
    single["base"] = both_tasks(model)
for name in ("sql", "python"):
    lora.set_active(model, name)
    single[name] = both_tasks(model)
display(table([(k, *(f"{v[t]['token_accuracy']:.1%}" for t in tests), *(f"{v[t]['loss']:.3f}" for t in tests))
               for k, v in single.items()],
              ["active", "SQL token accuracy", "Python token accuracy", "SQL loss", "Python loss"]))

# %% [markdown]
# Switching is exact: with the SQL adapter active, a model holding both adapters gives the same logits as a
# model that only ever had the SQL adapter.

# %%
only_sql = copy.deepcopy(model)
lora.delete(only_sql, "python")
lora.set_active(only_sql, "sql")
lora.set_active(model, "sql")
ids = torch.tensor([list(sql["test"][1].text.encode())], device=device)
with torch.no_grad():
    switch_exact = torch.equal(model(ids), only_sql(ids))
print("logits with both adapters loaded (SQL active) == SQL adapter alone:", switch_exact)

# %% [markdown]
# ## Merging: three methods, two weightings
#
# Each combination is built as a temporary adapter by `combine_scores` (which calls `lora.combine`), scored on
# both test sets, and removed again. Weights (0.5, 0.5) average the two updates; (1, 1) adds them in full. SVD
# truncates to rank 8, the rank of one adapter, half of what `cat` needs to be exact. The interference is the gap
# between each task's score under a merge and under its own adapter.

# %% tags=["nbval-ignore-output"]
combos = [(m, w) for w in (0.5, 1.0) for m in ("linear", "cat", "svd")]
merged = {}
for method, w in combos:
    res = {metric: combine_scores(model, {"sql": w, "python": w}, tests, method=method,
                                  rank=R if method == "svd" else None, metric=metric)
           for metric in METRICS}
    merged[(method, w)] = {**res["loss"], **{metric: res[metric]["scores"] for metric in METRICS}}
svd_full = combine_scores(model, {"sql": 1.0, "python": 1.0}, tests, method="svd", rank=2 * R)

rows = [(k, "—" if k == "base" else R, "—", f"{v['sql']['token_accuracy']:.1%}",
         f"{v['python']['token_accuracy']:.1%}", f"{v['sql']['loss']:.3f}", f"{v['python']['loss']:.3f}")
        for k, v in single.items()]
rows += [(f"{method} ({w:g}, {w:g})", f"{r['r']}", f"{r['max_error']:.3f}", f"{r['token_accuracy']['sql']:.1%}",
          f"{r['token_accuracy']['python']:.1%}", f"{r['loss']['sql']:.3f}", f"{r['loss']['python']:.3f}")
         for (method, w), r in merged.items()]
display(table(rows, ["adapter", "rank", "max rel. error of B A", "SQL token accuracy", "Python token accuracy",
                     "SQL loss", "Python loss"]))
for w in (0.5, 1.0):
    drops = ", ".join(f"{t} {100 * (merged[('cat', w)]['token_accuracy'][t] - single[t][t]['token_accuracy']):+.1f}"
                      for t in tests)
    print(f"cat ({w:g}, {w:g}) against each task's own adapter, token accuracy points: {drops}")
print(f"SVD approximation error at rank {R}: max {merged[('svd', 1.0)]['max_error']:.3f}, "
      f"mean {merged[('svd', 1.0)]['mean_error']:.3f};  at rank {2 * R}: max error < 1e-6: "
      f"{svd_full['max_error'] < 1e-6}")

# %%
labels = list(single) + [f"{m}\n({w:g},{w:g})" for m, w in merged]
values = {t: [single[k][t]["token_accuracy"] for k in single] + [r["token_accuracy"][t] for r in merged.values()]
          for t in tests}
x = range(len(labels))
fig, ax = plt.subplots(figsize=(10, 3.4))
for offset, (t, color) in zip((-0.2, 0.2), zip(tests, ("#4c72b0", "#dd8452"))):
    ax.bar([i + offset for i in x], values[t], width=0.4, color=color, label=f"{t} test")
    ax.axhline(single[t][t]["token_accuracy"], color=color, ls="--", lw=1)
ax.set_xticks(list(x), labels, fontsize=8)
ax.set(ylabel="token accuracy", ylim=(0, 1.05),
       title="Each task under each adapter and merge (dashed: its own adapter)")
ax.legend(loc="center left", fontsize=8)
plt.show()

# %% [markdown]
# How to read it: the single adapters set the ceiling for their own task (dashed). With (1, 1) `cat` applies both
# updates in full and exactly, so every point lost against the dashed line is interference: the Python update
# acting on SQL inputs and the other way round (printed above). With (0.5, 0.5) each update is halved, which here
# disturbs the other task less but also gives each task only half of its own update. `linear` is a different model
# altogether because of its cross terms, and `svd` at rank 8 keeps only part of the sum.
#
# ## Claim check

# %% tags=["nbval-ignore-output"]
gap = {k: min(r["token_accuracy"][t] - single[t][t]["token_accuracy"] for t in tests) for k, r in merged.items()}
best = max(gap, key=gap.get)  # the merge whose worse task loses least against its own adapter
best_gap = gap[best]
display(claim_check([
    ("switch adapters at run time, no reload", "adapters share the frozen base; only (A, B) change",
     f"both loaded, SQL active == SQL alone (logits equal): {switch_exact}", switch_exact),
    ("merging = weighted sum of the updates", "true of cat (exact); linear has cross terms; svd truncates",
     f"rel. error of B A at (1, 1): cat {'< 1e-6' if merged[('cat', 1.0)]['max_error'] < 1e-6 else 'above 1e-6'}, "
     f"linear {merged[('linear', 1.0)]['max_error']:.2f}, svd r={R} {merged[('svd', 1.0)]['max_error']:.2f}",
     "holds for cat only" if merged[("cat", 1.0)]["max_error"] < 1e-6 < merged[("linear", 1.0)]["max_error"]
     else "see table"),
    ("a merged adapter keeps both skills", "interference is the usual caveat (TIES, DARE try to reduce it)",
     f"best merge {best[0]} ({best[1]:g}, {best[1]:g}): its worse task {100 * best_gap:+.1f} points of token "
     f"accuracy vs its own adapter",
     "holds (within 5 points)" if best_gap >= -0.05 else "does not hold: merging costs accuracy here"),
]))

# %% [markdown]
# PEFT's `add_weighted_adapter` also offers TIES and DARE; this notebook measures linear, cat and svd only.

# %% [markdown]
# ## Explore: a weight slider between the two adapters
#
# The slider sets the weights to $(1 - t, t)$, combines the adapters with the chosen method, and measures both
# tasks' answer loss on a fresh temporary adapter at every move. Dashed lines: each task under its own adapter.
# Watch for the point where both curves are close to their dashed lines, if there is one, and compare `cat` with
# `linear` at the same $t$.

# %% [markdown]
# ![The explorer below as it first appears, at its default settings](figures/12_explorer.png)
#
# *The explorer below as it first appears, photographed in JupyterLab by `scripts/explorer_pictures.py`; run
# the cell for the live one.*

# %% tags=["explorer", "nbval-ignore-output"]
CombineExplorer(model, {"sql": sql["test"][:32], "python": python["test"]}, svd_rank=R).show()

# %% [markdown]
# ## Takeaways for the interview
#
# - Several adapters on one frozen base switch per request at no cost: measured, the logits equal those of the
#   adapter alone. This is how multi-adapter serving works (S-LoRA, arXiv 2311.03285, batches requests that use
#   different adapters).
# - Merging into one adapter is exact only for `cat` (rank $r_1 + r_2$). `linear` adds cross terms, `svd` pays a
#   truncation error, both reported by `lora.combine`.
# - A merge applies every update to every input: measure each task under the merge against its own adapter before
#   shipping one.
#
# **Follow-up questions to expect**
# - *When merge, when switch?* Merge when one model must serve a mix without routing and the tasks do not
#   interfere much; switch (or batch per adapter) when each request's task is known.
# - *Why does `linear` need equal ranks?* It sums $A_i$s and $B_i$s elementwise.
# - *What do TIES and DARE fix?* Sign conflicts and redundant small entries between task updates.
# - *Can a model learn how to combine adapters instead?* Yes: AdapterFusion (notebook 13).
