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
# base model, far below the scale where FLAN saw transfer to unseen tasks, and we make "new" mean new: every
# held-out input is made of words that no training set of peftlab contains, and every held-out wording is far from
# every trained one (ROUGE-L at most 0.2, measured below).

# %%
import collections
import torch
import matplotlib.pyplot as plt
from peftlab import instruct, load_base, scale, studies
from peftlab.evaluate import greedy_accuracy
from peftlab.instruct import NEW_WORDINGS, PARAPHRASES, TRAINED_PHRASINGS, instruct_sets, nearest_trained, respond
from peftlab.explore.instruct import InstructionExplorer
from peftlab.explore.report import table
from peftlab.explore.studies import claim_table, combo_table, describe, final_table, plot_bands, plot_live, plot_sweep

torch.manual_seed(0)
device = scale.device()  # PEFTLAB_SCALE=gpu opts in; unset: CPU, on any machine
base = load_base(device=device)
sets = instruct_sets()
print({name: len(examples) for name, examples in sets.items()}, "examples")
for name in ("test", "wordings", "families", "facts"):
    e = sets[name][0]
    print(f"{name:9s} {e.prompt.splitlines()[:2]} -> {e.response!r}")

# %% [markdown]
# One training example, as the model sees it; `|` marks where the loss starts when it is on the response only. The
# response ends with a terminator (a newline, then the EOS token) that generation stops at.

# %%
ex = sets["train"][0]
print(ex.prompt + "|" + ex.response, end="")

# %% [markdown]
# ## How new is "new"?
#
# The live recipe trains six rule families on 40 words (`data.WORDS`) and fact questions about 60 people. A model
# that has seen "Reverse the letters of the word." with *lantern* 20 times can answer it from memory. So the test
# inputs here are made of 40 other real words (`instruct.HELDOUT_WORDS`), none in any training set of peftlab, the
# teacher's included, with 4 to 9 letters in near-equal numbers, so that no
# constant answer gets far ("6" answers 7 of the 40 `count` inputs). And a held-out *wording* is only new if it is
# far from every trained one: ROUGE-L to the nearest wording any peftlab model trains on, for the paraphrases
# notebook 09 used before and for the new wordings the study uses.

# %%
display(table([(family, TRAINED_PHRASINGS[family], PARAPHRASES[family], f"{nearest_trained(PARAPHRASES[family]):.2f}",
                 NEW_WORDINGS[family], f"{nearest_trained(NEW_WORDINGS[family]):.2f}") for family in NEW_WORDINGS],
              ["family", "trained wording", "old paraphrase", "ROUGE-L to nearest trained",
               "new wording (study)", "ROUGE-L to nearest trained"]))
lengths = collections.Counter(len(w) for w in instruct.HELDOUT_WORDS)
print("letters per test word:", dict(sorted(lengths.items())), f"(the most common length covers "
      f"{max(lengths.values())} of {len(instruct.HELDOUT_WORDS)})")

# %% [markdown]
# Three of the old paraphrases were near copies ("Say the word three times." against the trained "Repeat the word
# three times.": 0.80); a model that follows them may only be matching words. The new wordings share at most one
# word with any trained wording.
#
# ## The base model only continues text
#
# The base model was pre-trained on statements and short stories; it has never seen this template. Besides exact
# match, the study scores the *format*: whether the answer has its family's form (digits for `count`, capitals for
# `uppercase`, three words for `repeat`, one of the world's values for a fact...) and then stops at the terminator,
# right or wrong (`instruct.well_formed`).

# %%
def request(e):
    """(instruction, input) of a held-out example, read back from its prompt."""
    instruction, given = e.prompt.splitlines()[:2]
    return instruction.removeprefix("Instruction: "), given.removeprefix("Input: ")

shown = sets["test"][::40]  # one per family
for e, answer in zip(shown, respond(base, [request(e) for e in shown])):
    print(f"{request(e)[0]:36} {request(e)[1]!r:40} -> base says {answer!r} (rule: {e.response.strip()!r})")
print("well formed:", instruct.well_formed("count", "7\n"), instruct.well_formed("count", "7 letters\n"),
      instruct.well_formed("count", "7"))

# %% [markdown]
# ## The study: four ways to instruction-tune, five seeds each
#
# Declared in `peftlab/studies/instruction_tuning.py` and run once by `python -m peftlab.studies run 09_instruct`
# (the results ship with peftlab). Every method trains 300 steps at batch 16 (about seven passes over the live
# recipe's 692 records) at its own best learning rate, swept over four rates for 100 steps and chosen on the
# validation answer loss; five seeds at that rate. Validation is what a practitioner has: 188 records from the
# training distribution (trained words in new combinations, questions about 12 other people). The test sets: 240 new
# inputs (40 per family on the 40 held-out words), the same 240 in the new wordings, 200 records of five new families,
# and the 192 fact questions about the 48 Q/A test people.
#
# - **full**: full fine-tuning, loss on the response;
# - **full_all**: the same with the loss on every token, prompt included (the masking ablation: nothing else changes);
# - **lora**: LoRA r = 8 on every linear layer, loss on the response;
# - **more_data**: full fine-tuning on the teacher's data (`teacher.teacher_task`: 5,612 records, 70% of the added
#   inputs made-up words such as "dotavi", three wordings per family) for the *same* 300 steps: more and more varied
#   data at equal compute;
# - **untuned**: the base model itself, measured on every set.

# %%
results = studies.load_results("09_instruct")  # refuses a file whose config or base model differ from today's
print(describe(results))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4))
plot_sweep(ax1, results)
plot_bands(ax2, results)
ax2.set_yscale("log")
plt.tight_layout()
plt.show()
display(final_table(results))
display(combo_table(results))

# %% [markdown]
# ⟨STUDY⟩
#
# ## A live run, checked against the study
#
# One point of the study, trained here by the study's own code: "full", seed 0, at the chosen rate, for the first
# 50 steps. Its test answer loss must land inside the band where one more seed's run is expected (the study's 95%
# prediction interval at step 50). Its numbers vary a little from machine to machine, so nbval does not compare them.

# %%
LIVE_STEPS = 50
tuned, live = studies.live_run(results, "full", LIVE_STEPS, base, seed=0)  # the study's own training code
per_family = collections.defaultdict(list)
for e in sets["test"]:
    per_family[e.meta["family"]].append(e)

# %% tags=["nbval-ignore-output"]
fig, ax = plt.subplots(figsize=(6, 3.4))
plot_live(ax, results, "full", LIVE_STEPS, live)
ax.set_yscale("log")
plt.show()
print(f"live run: {LIVE_STEPS} steps at lr {results['runs']['full']['lr']:g}, test answer loss {live:.3f}")
display(table([(f, f"{greedy_accuracy(tuned, ex):.0%}", f"{instruct.format_rate(tuned, ex):.0%}")
               for f, ex in sorted(per_family.items())],
              ["family (40 new inputs each)", f"exact match after {LIVE_STEPS} steps", "well formed"]))
for e, answer in zip(shown, respond(tuned, [request(e) for e in shown])):
    print(f"{request(e)[0]:36} {request(e)[1]!r:40} -> tuned says {answer!r} (rule: {e.response.strip()!r})")

# %%
print(studies.require_inside(results, "full", LIVE_STEPS, live))

# %% [markdown]
# ⟨LIVE⟩
#
# ## The shipped teacher: the same data, fifteen times the training
#
# The *teacher* of notebook 19 is the base model trained on the teacher's data (more_data's) for 4,500 steps at
# batch 8, 36,000 examples against the study's 4,800, with task-writing examples besides (`python -m peftlab.teacher
# --train`). It is context, not a claim: one model, one seed, another budget. Scored on the study's sets:

# %%
teacher = load_base("teacher", device=device)
display(table([(name, f"{greedy_accuracy(teacher, sets[name]):.1%}") for name in ("test", "wordings", "families")],
              ["set (the study's test sets)", "shipped teacher, exact match"]))

# %% [markdown]
# ⟨TEACHER⟩
#
# ## Claim check
#
# The study's claims, each with the margin declared before the run: a difference of the means over five seeds with
# its 95% Welch interval; against the untuned model, whose value is the same in every seed, the interval is the
# tuned runs' own. The verdict is what `peftlab.evidence.compare` reads off it.

# %%
display(claim_table(results))

# %% [markdown]
# ⟨CLAIMS⟩
#
# Not measured here, with one base size: InstructGPT's 1.3B model (supervised fine-tuning plus RLHF) was preferred
# by labellers over GPT-3 175B (Ouyang et al. 2022).

# %% [markdown]
# ## Explore: ask the models
#
# Type an instruction and an input, and compare the base model, the live instruction-tuned one and the teacher. Try
# a trained instruction with a held-out word ("Reverse the letters of the word." with *kettle*), a new wording
# ("Spell it backwards."), and a new task ("Write the last letter of each word."). Where the instruction is one of
# peftlab's families word for word, the rule's answer is shown too.

# %% [markdown]
# ![The explorer below as it first appears, at its default settings](figures/09_explorer.png)
#
# *The explorer below as it first appears, photographed in JupyterLab by `scripts/explorer_pictures.py`; run
# the cell for the live one.*

# %% tags=["explorer", "nbval-ignore-output"]
InstructionExplorer({"base": base, "instruction-tuned (live)": tuned, "teacher": teacher}).show()

# %% [markdown]
# ## Takeaways for the interview
#
# ⟨TAKEAWAYS⟩
#
# **Follow-up questions to expect**
# - *How many instructions and tasks do you need?* FLAN: more task clusters help held-out tasks; LIMA: 1,000 well-chosen
#   examples teach a 65B model the format (notebook 10).
# - *Where does the data come from?* Human-written, converted from datasets (FLAN), or generated by a stronger model
#   (self-instruct, Alpaca: notebook 19).
# - *What comes after SFT?* Preference tuning (RLHF, DPO), which InstructGPT's 1.3B result depends on.
