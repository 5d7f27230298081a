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
# work on. The study below measures plain `ties` and the two `*_svd` variants. Task arithmetic (Ilharco et al. 2023,
# arXiv 2212.04089) adds the other way too: *negating* a task vector, weight $-1$, should unlearn that task and
# leave others alone.
#
# What the short answer leaves out: merging into the base weights, $W_0 + \sum_i w_i \Delta W_i$ (each adapter
# merged at its weight), is always exactly the weighted sum. The caveat is about building one new low-rank
# adapter $(A, B)$ that stands for the sum: `cat` does so exactly, at rank $r_1 + r_2$; `linear` keeps rank $r$ but
# multiplies sums of factors, so its $BA$ carries cross terms; `svd` approximates at the rank it is given. And any
# merged model applies *every* task's update to *every* input, which is where interference comes from.
#
# One confound hides in the usual demonstration: each adapter also learned "answer in my format", so a merge may
# look bad only because it cannot tell which format an input wants. The study therefore adds one adapter trained on
# both tasks at once, at the steps of the two together: if it beats the merge, the loss is the merge's, not the
# tasks'. Below: the study (five seeds per adapter, every merge PEFT offers, the weight sweep), then two adapters
# trained live, switched and merged, and a slider to merge them yourself.

# %%
import statistics

import matplotlib.pyplot as plt
import torch

from peftlab import count_parameters, data, load_base, lora, scale, studies
from peftlab.evaluate import complete
from peftlab.evidence import exact
from peftlab.explore.combine import CombineExplorer
from peftlab.explore.report import claim_check
from peftlab.explore.studies import claim_table, combo_table, describe, final_table, plot_sweep, plot_weight_sweep
from peftlab.multitask import merge_adapters

torch.manual_seed(0)
device = scale.device()  # PEFTLAB_SCALE=gpu opts in; unset: CPU, on any machine
model = load_base(device=device)
sql, python = data.sql_task(), data.python_task()
print(f"SQL: {len(sql['train'])} train / {len(sql['test'])} test;  Python: {len(python['train'])} train / "
      f"{len(python['test'])} test, and {len(data.python_heldout())} more held-out Python pairs for the study")
print(repr(sql["train"][0].text))
print(repr(python["train"][0].text))

# %% [markdown]
# ## The study: two adapters, one on both, and every way to join them
#
# `python -m peftlab.studies run 12_combine` trained, for each of five seeds, a rank-8 LoRA on every linear layer
# for SQL (200 steps), one for Python (200 steps) and one on both tasks at once (400 steps, the two budgets
# together), each at the learning rate its own sweep chose (left). From each seed's SQL and Python adapters it built
# every combination: cat, linear and svd from `lora.combine`, PEFT's ties, ties_svd and dare_linear_svd, and task
# negation. Every model is measured on the same two test sets (SQL 78 pairs; Python 261: the task's 21 and 240 more
# from `data.python_heldout`), by the answer loss, and on 240 facts of pre-training, completed greedily (a control:
# no adapter was trained on them).

# %%
results = studies.load_results("12_combine")  # refuses a file whose config or base model differs from today's
print(describe(results))
fig, ax = plt.subplots(figsize=(6, 3.6))
plot_sweep(ax, results)
plt.tight_layout()
plt.show()
display(final_table(results))

# %% [markdown]
# Every combination against the trained adapters, mean over the five seeds with its 95% interval. The SQL loss of
# the SQL adapter and the Python loss of the Python adapter are each task's own ceiling; `pair_loss` weighs both
# tasks equally.

# %%
display(combo_table(results, runs=("sql", "python", "mixture")))

# %% [markdown]
# ## The weight sweep
#
# Weights $(1 - t, t)$ over (SQL, Python) for cat, linear and svd (rank 8), per seed; the band is the 95% interval
# of the mean over seeds. At $t = 0$ `cat` is the SQL adapter alone, at $t = 1$ the Python adapter alone.

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.4))
for ax, metric in zip(axes, ("sql_loss", "python_loss", "pair_loss")):
    plot_weight_sweep(ax, results, metric)
plt.tight_layout()
plt.show()
for kind, sweep in results["weight_sweep"].items():
    pair = [statistics.fmean(s["pair_loss"][j] for s in sweep["seeds"]) for j in range(len(sweep["t"]))]
    best = min(range(len(pair)), key=pair.__getitem__)
    print(f"{kind:6s}: the lowest mean pair loss at t = {sweep['t'][best]:g}: {pair[best]:.3f} nats "
          f"(t = 0: {pair[0]:.3f}, t = 1: {pair[-1]:.3f})")

# %% [markdown]
# How to read it. Each adapter learned its task and its format: the SQL adapter ends at 0.162 nats on SQL and
# 9.177 on Python, the Python adapter at 0.848 on Python and 6.993 on SQL, while the base model, which has seen
# neither kind of answer, sits at 10.000 and 10.907. The Python adapter also takes over the completion of facts:
# 0.0% of the 240 against the base model's 95.0%; whatever it reads, it writes code. (The SQL adapter had not met
# the plateau rule by step 200, at a loss already near the mixture's.)
#
# Every merge inherits this. With both updates in full, `cat` (1, 1) is the exact sum, and SQL rises to 6.534 nats
# while Python stays near its own adapter (1.249): the Python update wins on SQL inputs. No combination PEFT offers
# changes the picture: SQL between 5.825 and 6.931 nats, the pair loss between 3.408 and 4.056. The one adapter
# trained on both tasks for the same 400 steps has no such cost: 0.169 on SQL (the SQL adapter: 0.162) and 0.623 on
# Python, better than the Python adapter's 0.848, so the tasks fit in one rank-8 adapter when trained together. The
# cost is the merge's, not the tasks'. The weight sweep gives the trade-off: the best pair loss lies where the SQL
# update dominates (printed above), and no $t$ keeps both tasks near their own adapters.
#
# ## Two adapters trained live, checked against the study
#
# One point of the study per adapter, trained here by the study's own code: seed 0, the chosen rate, the first 50
# steps. Each adapter's test answer loss must land inside the band where one more seed's run is expected (the
# study's 95% prediction interval at step 50). Its numbers vary a little from machine to machine, so nbval does not
# compare them; the cell after checks the bands.

# %%
LIVE_STEPS = 50
live = {task: studies.live_run(results, task, LIVE_STEPS, model, seed=0) for task in ("sql", "python")}
both = merge_adapters(model, {task: m for task, (m, _) in live.items()}, {"sql": 1.0, "python": 1.0}, "cat")
lora.delete(both, "merged")  # keep the two adapters on one base: switch between them below

# %% tags=["nbval-ignore-output"]
for task, (m, loss) in live.items():
    print(f"{task:6s} adapter: {LIVE_STEPS} steps at lr {results['runs'][task]['lr']:g}, test answer loss {loss:.3f}")
print(f"adapters on one base: {lora.adapter_names(both)}, {count_parameters(live['sql'][0]).trainable:,} "
      f"parameters each ({100 * count_parameters(live['sql'][0]).trainable / count_parameters(model).total:.2f}% "
      f"of the base model)")

# %%
for task in ("sql", "python"):
    print(studies.require_inside(results, task, LIVE_STEPS, live[task][1]))

# %% [markdown]
# ## Switching at run time
#
# The same model object answers both kinds of request: `lora.set_active` picks the adapter, `lora.disabled` runs
# the base. Nothing is reloaded or recomputed.

# %% tags=["nbval-ignore-output"]
prompts = {"sql": sql["test"][0].prompt, "python": python["test"][0].prompt}


def show_answers(label):
    print(f"--- {label}")
    for task, n_lines in (("sql", 1), ("python", 2)):
        answer = complete(both, [prompts[task]], 70)[0]
        print(prompts[task] + "\n".join(answer.split("\n")[:n_lines]))


with lora.disabled(both):
    show_answers("base model (lora.disabled)")
for name in ("sql", "python"):
    lora.set_active(both, name)
    show_answers(f"active adapter: {name}")

# %% [markdown]
# Switching is exact: with the SQL adapter active, the model holding both adapters gives the logits of the model
# that only ever had the SQL adapter. Building one adapter for the sum is exact for `cat` only: `lora.combine`
# reports the relative error of its $BA$ against $\sum_i w_i \Delta W_i$, layer by layer.

# %% tags=["nbval-ignore-output"]
lora.set_active(both, "sql")
ids = torch.tensor([list(sql["test"][1].text.encode())], device=device)
with torch.no_grad():
    switch_diff = (both(ids) - live["sql"][0](ids)).abs().max().item()
errors = {}
for method in ("cat", "linear", "svd"):
    report = lora.combine(both, {"sql": 1.0, "python": 1.0}, "combined", method=method,
                          rank=8 if method == "svd" else None)
    errors[method] = report["max_error"]
    lora.delete(both, "combined")
lora.set_active(both, "sql")
print("max |logit difference|, both loaded (SQL active) vs the SQL adapter alone:", switch_diff)
print("max relative error of B A against the weighted sum, weights (1, 1): "
      + ", ".join(f"{k} {v:.2g}" for k, v in errors.items()) + " (svd at rank 8, half of what cat needs)")

# %% [markdown]
# ## Claim check
#
# The study's claims, each with the margin it declared before running: the difference of the two models' means
# over five seeds each, its 95% Welch interval, and the verdict `peftlab.evidence.compare` reads off it. Below them,
# facts of the construction, weighed by `peftlab.evidence.exact`.

# %%
display(claim_table(results))
display(claim_check([
    ("switch adapters at run time, no reload", "adapters share the frozen base; only (A, B) change",
     f"max |logit difference|, both loaded vs SQL alone: {switch_diff:.0e}",
     exact(switch_diff, claim="equivalent", margin=1e-12).verdict),
    ("cat builds the exact sum", "A = [A1; A2], B = [w1 s1 B1, w2 s2 B2]: B A = sum of w_i ΔW_i",
     f"max relative error {'below' if errors['cat'] < 1e-5 else 'above'} 1e-5",
     exact(errors["cat"], claim="equivalent", margin=1e-5).verdict),
    ("linear is not the sum", "B A carries the cross terms B1 A2, B2 A1",
     f"max relative error above 0.01: {errors['linear'] > 0.01}",
     exact(errors["linear"], 0.01, claim="greater", margin=0.0).verdict),
]))

# %% [markdown]
# Read against the papers. Interference holds on both tasks: the exact sum is 6.37 nats worse on SQL than the SQL
# adapter [5.92, 6.82] and 0.40 worse on Python than the Python adapter [0.19, 0.61]. The adapter trained on both
# beats the merge by 3.50 nats [3.21, 3.78], so the confound of two adapters that each learned "answer in my format"
# does not explain it away: a merge of separately trained updates loses what joint training keeps. TIES on each
# layer's $\Delta W$ against the plain sum is inconclusive, -0.03 nats [-0.33, +0.27], and so is DARE's "drop half,
# lose little", +0.16 [-0.15, +0.48] against its declared margin of 0.05: with five seeds the intervals are wider
# than the effects the papers report. Task negation does not hold here in either half. Negating the Python adapter
# leaves the Python loss 4.47 nats *below* the base model's: the base has never seen a code answer (10.907 nats),
# so there is nothing to unlearn and any large change moves that loss. And it erases the facts, 95 points in every
# seed. Ilharco et al. negate task vectors of fully fine-tuned models that were competent on the control task
# before; a rank-8 update at weight $-1$ on a small model is a large step in a direction nobody trained. Below the
# study's rows, facts of the construction: switching is exact, `cat` builds the exact sum, `linear` does not
# (the errors are printed above).
#
# ## Explore: a weight slider between the two adapters
#
# The slider sets the weights to $(1 - t, t)$, combines the two live adapters with the chosen method, and measures
# both tasks' answer loss on a fresh temporary adapter at every move. Dashed lines: each task under its own
# adapter. The study's sweep above is the five-seed version of this slider.

# %% [markdown]
# ![The explorer below as it first appears, at its default settings](figures/12_explorer.png)
#
# *The explorer below as it first appears, photographed in JupyterLab by `scripts/explorer_pictures.py`; run
# the cell for the live one.*

# %% tags=["explorer", "nbval-ignore-output"]
CombineExplorer(both, {"sql": sql["test"][:32], "python": python["test"]}, svd_rank=8).show()

# %% [markdown]
# ## Takeaways for the interview
#
# - Several adapters on one frozen base switch per request at no cost: measured, the logits equal those of the
#   adapter alone. This is how multi-adapter serving works (S-LoRA, arXiv 2311.03285, batches requests that use
#   different adapters).
# - Merging into the base weights is always the exact weighted sum; one new low-rank adapter for that sum is exact
#   only for `cat` (rank $r_1 + r_2$); `linear` adds cross terms and `svd` pays a truncation error.
# - A merge applies every update to every input. Measured on a SQL and a Python adapter over five seeds, every
#   combination, TIES and DARE included, lost most of SQL to the Python update, while one adapter trained on both
#   tasks at the same steps kept both. Merge adapters you cannot retrain; if you have the data, train one adapter
#   on the mixture.
# - TIES and DARE were inconclusive against the plain sum here, and task negation did not unlearn Python without
#   wrecking the rest: check such claims on your own adapters before relying on them.
#
# **Follow-up questions to expect**
# - *When merge, when switch?* Merge when one model must serve a mix without routing and the tasks do not
#   interfere much; switch (or batch per adapter) when each request's task is known.
# - *Why does `linear` need equal ranks?* It sums $A_i$s and $B_i$s elementwise.
# - *What do TIES and DARE fix?* Sign conflicts and redundant small entries between task updates; measure whether
#   they do on your adapters, as above.
# - *Can a model learn how to combine adapters instead?* Yes: AdapterFusion (notebook 13).
