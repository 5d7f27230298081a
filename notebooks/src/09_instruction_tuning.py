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
from peftlab.checkpoint import manifest
from peftlab.evaluate import greedy_accuracy
from peftlab.instruct import (NEW_WORDINGS, PARAPHRASES, TRAINED_PHRASINGS, constant_accuracy, instruct_sets,
                              nearest_trained, respond)
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
print(f"the best constant answer per family, fitted on the training records: "
      f"{constant_accuracy(sets['train'], sets['test']):.1%} exact match on the 240 test records")

# %% [markdown]
# Read the sweep first: every rate was chosen on validation records from the training distribution, and each
# chosen rate lies inside its grid except more_data's, 3e-4, the lowest rate swept; a lower rate might serve it
# better, so its row is a lower bound. (A first run of this study chose rates on held-out words instead, where every
# model fails; the lowest loss there went to full fine-tuning at 1e-2, a model collapsed to answering "for". The
# validation set must be one a model can learn.) No method met the plateau rule within 300 steps: the validation
# loss was still falling, and every verdict below is about this budget.
#
# Then the final table, on 240 inputs made of words no model trained on:
#
# - **The format is learned.** 85.1% of full fine-tuning's answers take their family's form and stop at the
#   terminator, against 0% for the untuned model, which continues the text instead (the answers printed above).
# - **The operation mostly is not.** Exact match is 5.8% for full fine-tuning, twice the 2.9% that the best
#   constant answer per family gets, and the answer loss is 4.9 nats per token: trained on 40 words, the model
#   learned which answers those words have, and on a new word it writes a trained word's answer in the right form
#   (the live run below shows it).
# - **New wordings and new tasks: nothing.** 0% for every method, the teacher's data included. At 3.3M parameters
#   and six families, an instruction worded far from every trained one is not recognised, and a new operation is
#   not composed.
# - **Held-out facts: a little.** 7.0% of the questions about people only read about in pre-training. Compare
#   notebook 10, where a Q/A-only set answers 88.6% of the same kind of question: here the fact questions are 120
#   of 692 records, mixed with rule families.
# - **More and more varied data, same compute**: trained on the teacher's records (70% of inputs made-up words),
#   more_data reaches 10.7% and the lowest answer loss (2.61 nats): made-up words leave no table of answers to
#   memorise, so what is learned is closer to the operation.
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
# Fifty steps are enough for the format (the well-formed column), not for the operation: the tuned model answers a
# new word with the answer of a trained one ("river" for *jungle*), in the right form. Its exact matches on `count`
# are at the level of guessing one length for every word.
#
# ## The shipped teacher: the same data, fifteen times the training
#
# The *teacher* of notebook 19 is the base model trained on the teacher's data (more_data's) for 4,500 steps at
# batch 8, 36,000 examples against the study's 4,800, with task-writing examples besides (`python -m peftlab.teacher
# --train`). It is context, not a claim: one model, one seed, another budget. Its manifest holds its scores on the
# study's test sets, measured by `python -m peftlab.teacher --measure` (tests/test_self_instruct.py re-measures one):

# %%
teacher = load_base("teacher", device=device)
scores = manifest("teacher")["metrics"]
display(table([("new inputs (240)", f"{scores['new_inputs_exact_match']:.1%}"),
               *((f"  {f} (40)", f"{v:.1%}") for f, v in scores["new_inputs_per_family"].items()),
               ("new wordings (240)", f"{scores['new_wordings_exact_match']:.1%}"),
               ("constant answer per family, for reference", f"{scores['constant_answer_exact_match']:.1%}")],
              ["the study's test sets", "shipped teacher, exact match"]))

# %% [markdown]
# Fifteen times the training on the same kind of data takes the new-word exact match from more_data's 10.7% to
# 19.6%, all of it in the families that copy or count letters (count 77.5%); reversing and sorting stay at 0%, and
# new wordings at 2.1%. It is still a small model with six operations.
#
# ## Claim check
#
# The study's claims, each with the margin declared before the run: a difference of the means over five seeds with
# its 95% Welch interval; against the untuned model, whose value is the same in every seed, the interval is the
# tuned runs' own. The verdict is what `peftlab.evidence.compare` reads off it.

# %%
display(claim_table(results))

# %% [markdown]
# What the verdicts say, each at this budget:
#
# - *Instruction tuning teaches the format* holds, far outside its 50-point margin.
# - *It answers new inputs, new wordings, new tasks, held-out facts* does not hold at 3.3M parameters with six
#   families: the margins (10, 5, 5 and 20 points) are above what was measured (5.8, 0, 0 and 7.0 points). The
#   new-input difference has no spread: every seed answered the same 14 of 240.
# - *Masking the prompt helps*: inconclusive on both measures. The response-only loss is 0.15 nats lower, but the
#   interval [-0.32, +0.02] reaches zero, and exact match differs by 0.4 points. With answers this short and this
#   little data, Shi et al. 2024 found the whole-sequence loss can help; here neither choice is shown better.
# - *LoRA reaches full fine-tuning* does not hold, in an unexpected direction: LoRA's answer loss is 0.37 nats
#   *lower* [-0.53, -0.21], outside the ±0.1 band, while its exact match is lower (1.9% against 5.8%). The two
#   measures disagree because the loss averages over every answer token of inputs neither model can do, where a
#   less confident model loses less.
# - *More varied data teaches more at equal compute* holds: +4.8 points [+2.9, +6.8]. The data, not the budget,
#   makes the difference, since both trained 300 steps at batch 16. On new wordings it is inconclusive: both 0%.
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
# - Instruction tuning is supervised fine-tuning on (instruction, input, response) records in one template; the same
#   template must be used at generation time, and the response ends with a terminator the generator stops at.
# - Check "follows new instructions" with inputs and wordings that are really new: here, words no training set
#   holds and wordings with ROUGE-L at most 0.2 to any trained one. Near copies (0.80) and re-used words make a model
#   that memorised look like one that generalises.
# - Measured here (five seeds, 300 steps, own best rates): the format transfers at once (85.1% well formed); the
#   operation hardly (5.8% exact match on new words, against 2.9% for a constant answer); new wordings and new
#   tasks not at all. Varied data (made-up words) helps at equal compute: 10.7%. FLAN (2021, 62 tasks) found no
#   transfer to unseen tasks at 8B parameters and below; Flan-T5 (2022, 1,836 tasks) found gains from 80M up: task
#   diversity matters as much as scale, and six families are far from either.
# - Masking the prompt out of the loss is the usual choice, and an ablation to run, not a law: here the two are
#   within noise of each other (Shi et al. 2024).
# - LoRA at rank 8 on every linear layer, at this budget, gets fewer answers exactly right than full fine-tuning
#   (1.9% against 5.8%) with a lower loss on the wrong ones.
#
# **Follow-up questions to expect**
# - *How many instructions and tasks do you need?* FLAN: more task clusters help held-out tasks; LIMA: 1,000 well-chosen
#   examples teach a 65B model the format (notebook 10).
# - *Where does the data come from?* Human-written, converted from datasets (FLAN), or generated by a stronger model
#   (self-instruct, Alpaca: notebook 19).
# - *What comes after SFT?* Preference tuning (RLHF, DPO), which InstructGPT's 1.3B result depends on.
