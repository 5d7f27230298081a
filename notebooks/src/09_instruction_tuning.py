# %% [markdown]
# # 09 · What does instruction tuning teach?
#
# **The interview question.** *"What is instruction tuning? Why is the loss computed on the response only? Does an
# instruction-tuned model follow instructions it has never seen?"*
#
# **The short answer an interviewer expects**
# - Instruction tuning is supervised fine-tuning on (instruction, input, response) records written in one template.
# - The loss is on the response tokens only: the model should learn to *answer*, not to model the prompts.
# - It teaches the model to follow instructions, including new ones (FLAN, InstructGPT).
#
# ## The precise answer
#
# Each record is rendered with one template, the same at training and at generation time:
#
# ```
# Instruction: {instruction}
# Input: {input}          <- dropped when there is no input
# Response: {response}
# ```
#
# The training sequence is prompt + response + a terminator (here a newline, then the EOS token); generation feeds
# the same prompt and stops at the terminator. With response positions $R$, the loss is
#
# $$\mathcal{L} = -\frac{1}{|R|}\sum_{t \in R} \log p_\theta(x_t \mid x_{<t}),$$
#
# and "loss on the whole sequence" sums over every position instead. Two figures an interviewer may quote:
#
# - FLAN (Wei et al. 2021, arXiv 2109.01652): instruction tuning a 137B model on 60+ datasets phrased as
#   instructions beat zero-shot GPT-3 175B on 20 of 25 held-out datasets (19 of 25 in the first version). The
#   same paper reports that for models of 8B parameters and fewer, instruction tuning *hurt* performance on
#   held-out tasks. That finding is dated: Flan-T5 (Chung et al. 2022, arXiv 2210.11416), instruction tuned on
#   1,836 tasks, improves held-out benchmarks at every size from 80M parameters up, so task diversity matters as
#   much as scale.
# - InstructGPT (Ouyang et al. 2022, arXiv 2203.02155): labelers preferred a 1.3B model's outputs to GPT-3
#   175B's. That model had supervised instruction tuning *and* RLHF, so the result is not about SFT alone.
#
# What the short answer leaves out: "follows new instructions" has degrees. A new input to a trained instruction,
# a new wording of a trained instruction, a new task, and a question about knowledge the model has but never saw
# in instruction form are four different generalisations. We measure all four on peftlab's 3.3M-parameter byte-level
# base model, far below the scale where FLAN saw transfer to unseen tasks.

# %%
import copy
import torch
import matplotlib.pyplot as plt
from peftlab import load_base, lora, count_parameters, scale
from peftlab import instruct
from peftlab.checkpoint import manifest
from peftlab.instruct import DEFAULT_TEMPLATE, evaluate, fixed_width_batches, to_examples
from peftlab.train import train
from peftlab.explore.instruct import InstructionExplorer
from peftlab.explore.report import table, claim_check, better_by_both

torch.manual_seed(0)
GPU = scale.gpu()  # PEFTLAB_SCALE=gpu opts in to the larger setting; unset: CPU, on any machine
device = "cuda" if GPU else "cpu"
# CPU: under a minute on 2 cores; GPU: long enough for the rule families to be learned
STEPS, BATCH, LR, PER_FAMILY = (1500, 32, 1e-3, 16) if GPU else (60, 8, 2e-3, 3)
WARMUP, LORA_LR = 6, 5e-3  # linear warm-up, then cosine decay
base = load_base(device=device)

records = instruct.training_records()
suite = instruct.heldout_suite(per_family=PER_FAMILY)
print(f"{len(records)} training records;", {k: len(v) for k, v in suite.items()}, "held-out records")
for name, recs in suite.items():
    r = recs[0]
    print(f"{name:15s} {r.instruction!r:45} {r.input!r:28} -> {r.output!r}")

# %% [markdown]
# One training example, as the model sees it; `|` marks where the loss starts when it is on the response only.

# %%
ex = to_examples(records[:1])[0]
print(ex.prompt + "|" + ex.response, end="")

# %% [markdown]
# ## The base model only continues text
#
# The base model was pre-trained on statements and short stories; it has never seen this template.

# %%
def held_out(model):
    return {name: evaluate(model, recs) for name, recs in suite.items()}

results = {"base": held_out(base)}
for r, p in list(zip(suite["new inputs"], results["base"]["new inputs"]["predictions"]))[:3]:
    print(f"{r.instruction} {r.input!r} -> base says {p!r}")

# %% [markdown]
# ## Instruction tuning, loss on the response only
#
# Full fine-tuning on the training records. Batches are padded to fixed widths (`fixed_width_batches`): on a CPU
# every new tensor shape stalls the first step that meets it, and padding carries no loss.

# %%
def tune(model, loss_on="response", lr=LR):
    batches = fixed_width_batches(to_examples(records), BATCH, loss_on=loss_on, seed=0)
    return train(model, batches, steps=STEPS, lr=lr, warmup_steps=WARMUP, schedule="cosine", seed=0, progress=False)

tuned = copy.deepcopy(base)
hist = tune(tuned)
print(f"{STEPS} steps, batch {BATCH}: loss {hist.loss[0]:.3f} -> {hist.loss[-1]:.3f} in {hist.wall_time:.1f} s")
results["full FT, loss on response"] = held_out(tuned)
for r, p in list(zip(suite["new inputs"], results["full FT, loss on response"]["new inputs"]["predictions"]))[:6]:
    print(f"{r.instruction} {r.input!r} -> tuned says {p!r} (rule: {r.output!r})")

# %% [markdown]
# ## The ablation: loss on the whole sequence
#
# Same model, steps, learning rate, batches and seed; only the labels change: the prompt tokens carry loss too.

# %%
tuned_all = copy.deepcopy(base)
hist_all = tune(tuned_all, loss_on="all")
print(f"loss on all tokens: {hist_all.loss[0]:.3f} -> {hist_all.loss[-1]:.3f} (not comparable to the response-only loss)")
results["full FT, loss on all"] = held_out(tuned_all)

# %% [markdown]
# ## LoRA instead of full fine-tuning
#
# Rank 8 on every linear layer, the base frozen; a higher learning rate, as is usual for LoRA.

# %%
tuned_lora = lora.add(copy.deepcopy(base), r=8, alpha=16, targets="all-linear")
n = count_parameters(tuned_lora)
print(f"LoRA trains {n.trainable:,} of {n.total:,} parameters ({n.trainable / n.total:.1%})")
tune(tuned_lora, lr=LORA_LR)
results["LoRA r=8"] = held_out(tuned_lora)

# %% [markdown]
# ## The same base, instruction-tuned on more and more varied data
#
# A minute of CPU is a few passes over the data at most. For reference, the *teacher* of notebook 19 is the same
# base model instruction-tuned far longer on many more records: the same instructions plus a few extra wordings,
# with the words of most inputs *made up* (`pseudo_words()` such as "dotavi", "sinawe"), and the same tasks in a
# task-writing format.
# With only 40 real words a model can memorise the answer for each word; with thousands of made-up ones it has
# to learn the operation. It ships with peftlab; it was made once by
# `python -m peftlab.teacher --train`. It never saw the held-out inputs, the new phrasings of
# PARAPHRASES, the new families, or the held-out people's facts.

# %%
from peftlab.teacher import teacher_tasks

teacher = load_base("teacher", device=device)
made = manifest("teacher")["teacher"]
print(f"shipped teacher: {made['steps']} steps, batch {made['batch_size']}, lr {made['lr']}, on {made['data']}")
print(f"records: {len(teacher_tasks(made['seed'], made['per_family'], made['pseudo'])):,} vs {len(records):,} live; "
      f"examples seen: {made['steps'] * made['batch_size']:,} vs {STEPS * BATCH:,} live")
results["more data (shipped teacher)"] = held_out(teacher)

# %% [markdown]
# ## Measure: exact match and response loss on the four held-out sets

# %%
rows = []
for model_name, res in results.items():
    rows.append((model_name, *(f"{res[s]['exact_match']:.1%} / {res[s]['loss']:.3f}" for s in suite)))
display(table(rows, ["model (exact match / response loss)", *suite]))

# %%
families = sorted({f for s in suite for f in results["base"][s]["per_family"]})
per_family = [(s, f, *(f"{results[m][s]['per_family'][f]:.0%}" for m in results))
              for s in suite for f in results["base"][s]["per_family"]]
display(table(per_family, ["held-out set", "family", *results]))

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
width = 0.8 / len(results)
for i, (model_name, res) in enumerate(results.items()):
    xs = [j + i * width for j in range(len(suite))]
    axes[0].bar(xs, [res[s]["exact_match"] for s in suite], width, label=model_name)
    axes[1].bar(xs, [res[s]["loss"] for s in suite], width, label=model_name)
for ax, label in zip(axes, ["exact match", "loss on response tokens (nats)"]):
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(suite))])
    ax.set_xticklabels(list(suite), fontsize=8)
    ax.set_ylabel(label)
axes[1].set_yscale("log")
axes[0].legend(fontsize=7)
plt.tight_layout(); plt.show()

# %% [markdown]
# Read the table by rows and columns:
#
# - **base**: no exact matches and a response loss far above the tuned models': it continues the text in the
#   style of its pre-training corpus instead of answering.
# - **new inputs** (trained instruction, unseen input) is where tuning pays first; which families reach exact matches
#   within the CPU budget is in the per-family table (families whose answer is short, like `count`, come first).
# - **new phrasings** and **new families** stay at or near zero exact matches for the live runs even where new
#   inputs are answered: the response loss drops (the model learned the format and the style of answers), but a
#   minute of tuning does not map an unseen wording to a known operation, let alone compose a new operation.
# - **held-out facts**: the answers are in the base model (notebook 10), and the format is learned, but in this
#   budget the fact questions are a sixth of a mixed training set; compare notebook 10, where a Q/A-only set
#   transfers to held-out people.
# - **more data (shipped teacher)**: trained on made-up words as well as real ones, it had to learn operations,
#   not a table of answers, and it answers held-out inputs of the families that copy letters (the per-family table
#   shows which: reversal and sorting stay out of reach at this size). It is also the one model here that follows
#   *new wordings* of trained instructions ("Say the word three times."), yet new families stay at zero: it maps
#   an unseen wording onto an operation it knows; it does not invent a new operation.
#
# Loss masking: compare the two full fine-tuning rows (printed below). Masking the prompt is the usual choice,
# but it is a choice with evidence on both sides: Shi et al. 2024 ("Instruction Tuning With Loss Over
# Instructions", arXiv 2405.14394) found that keeping the loss on the instruction helps when the responses are
# short and the training set small, which is our case. The whole-sequence run also learns the template and the
# input words, and those gradients are not wasted on a model this small.

# %%
def mean_em(res, sets=("new inputs",)):
    return sum(res[s]["exact_match"] for s in sets) / len(sets)

full, full_all, lora_res, base_res = (results[k] for k in
                                      ["full FT, loss on response", "full FT, loss on all", "LoRA r=8", "base"])
print(f"new inputs, exact match: response-only {full['new inputs']['exact_match']:.1%}, "
      f"whole sequence {full_all['new inputs']['exact_match']:.1%}, LoRA {lora_res['new inputs']['exact_match']:.1%}")
print(f"new inputs, response loss: response-only {full['new inputs']['loss']:.3f}, "
      f"whole sequence {full_all['new inputs']['loss']:.3f}, LoRA {lora_res['new inputs']['loss']:.3f}")
teacher_res = results["more data (shipped teacher)"]
for s in ("new phrasings", "new families"):
    print(f"{s}, exact match: base {base_res[s]['exact_match']:.1%}, live full FT {full[s]['exact_match']:.1%}, "
          f"shipped teacher {teacher_res[s]['exact_match']:.1%}")

# %% [markdown]
# ## Claim check

# %%
masking_verdict = better_by_both(full["new inputs"], full_all["new inputs"], "masking")
display(claim_check([
    ("instruction tuning teaches the format: the base only continues text",
     "FLAN; LIMA (notebook 10)",
     f"response loss on new inputs {base_res['new inputs']['loss']:.2f} → {full['new inputs']['loss']:.2f}",
     full["new inputs"]["loss"] < base_res["new inputs"]["loss"] / 2),
    ("an instruction-tuned model follows unseen wordings of known instructions",
     "FLAN: instruction templates vary the wording of each task",
     f"new phrasings: base {base_res['new phrasings']['exact_match']:.0%} → teacher "
     f"{teacher_res['new phrasings']['exact_match']:.0%} "
     f"(live, {STEPS} steps: {full['new phrasings']['exact_match']:.0%})",
     teacher_res["new phrasings"]["exact_match"] > max(0.1, base_res["new phrasings"]["exact_match"])),
    ("an instruction-tuned model follows unseen tasks",
     "FLAN 137B beats zero-shot GPT-3 175B on 20 of 25 held-out datasets; hurts at <= 8B",
     f"3.3M model, new families: base {base_res['new families']['exact_match']:.0%} → teacher "
     f"{teacher_res['new families']['exact_match']:.0%}",
     "holds only at scale" if teacher_res["new families"]["exact_match"] <= 0.1 else
     teacher_res["new families"]["exact_match"] > base_res["new families"]["exact_match"]),
    ("loss on response tokens only is better",
     "standard practice (FLAN, Alpaca); an ablation, not a law",
     f"new-input exact match {full['new inputs']['exact_match']:.0%} vs {full_all['new inputs']['exact_match']:.0%}, "
     f"response loss {full['new inputs']['loss']:.3f} vs {full_all['new inputs']['loss']:.3f}", masking_verdict),
    ("more instruction data teaches more (same base)",
     "FLAN: more tasks and templates help; LIMA: quality over quantity",
     f"new-input exact match: {full['new inputs']['exact_match']:.0%} (live, {STEPS} steps) vs "
     f"{teacher_res['new inputs']['exact_match']:.0%} (teacher)",
     teacher_res["new inputs"]["exact_match"] > full["new inputs"]["exact_match"]),
]))

# %% [markdown]
# Not measured here, with one base size: InstructGPT's 1.3B model (supervised fine-tuning plus RLHF) was preferred
# by labellers over GPT-3 175B (Ouyang et al. 2022).

# %% [markdown]
# ## Explore: ask both models
#
# Type an instruction and an input, and compare the base model with the instruction-tuned one. Try a trained
# instruction with a new word, the same instruction in other words ("Spell the word backwards."), and a new task
# ("Write the last letter of each word."). Where the instruction is one of peftlab's families word for word, the
# rule's answer is shown too.

# %% [markdown]
# ![The explorer below as it first appears, at its default settings](figures/09_explorer.png)
#
# *The explorer below as it first appears, photographed in JupyterLab by `scripts/explorer_pictures.py`; run
# the cell for the live one.*

# %% tags=["explorer", "nbval-ignore-output"]
InstructionExplorer({"base": base, "instruction-tuned": tuned, "LoRA": tuned_lora,
                              "more data (teacher)": teacher}).show()

# %% [markdown]
# ## Takeaways for the interview
#
# - Instruction tuning is supervised fine-tuning on (instruction, input, response) records in one template; the same
#   template must be used at generation time, and the response ends with a terminator the generator stops at.
# - The loss usually sits on the response only; measured here against the whole-sequence loss with everything else
#   equal (table above). It is an ablation to run, not a law: with short answers and little data, loss on the
#   prompt as well can help (Shi et al. 2024).
# - What transfers at 3.3M parameters: the format at once; new inputs to trained instructions once the inputs
#   are varied enough that memorising them is no option (made-up words); and, with that, some new wordings of
#   trained instructions. What does not: new tasks. FLAN (2021, 62 tasks) found no transfer to unseen tasks at
#   8B parameters and below, but Flan-T5 (2022, 1,836 tasks) found gains from 80M up: following truly new
#   instructions depends on instruction diversity as well as scale, and our handful of task families is far from
#   either.
# - LoRA at rank 8 trains 4.5% of the parameters and, at this notebook's budget, does *not* reach full fine-tuning's
#   behaviour: 0% exact match on new inputs against about 11%, and a higher response loss (the printout above).
#   Whether it catches up when both are trained to a plateau, each at its own best rate, is not measured here.
#
# **Follow-up questions to expect**
# - *How many instructions and tasks do you need?* FLAN: more task clusters help held-out tasks; LIMA: 1,000 well-chosen
#   examples teach a 65B model the format (notebook 10).
# - *Where does the data come from?* Human-written, converted from datasets (FLAN), or generated by a stronger model
#   (self-instruct, Alpaca: notebook 19).
# - *What comes after SFT?* Preference tuning (RLHF, DPO), which InstructGPT's 1.3B result depends on.
