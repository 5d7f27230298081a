# %% [markdown]
# # 10 · How does pre-training data differ from fine-tuning data?
#
# **The interview question.** *"What is the difference between pre-training data and fine-tuning data? What does
# fine-tuning actually teach the model?"*
#
# **The short answer an interviewer expects**
# - Pre-training data: massive, noisy, general, unlabeled text; the objective is next-token prediction.
# - Fine-tuning data: small, clean, task-specific, often (prompt, response) pairs with the loss on the response.
# - Fine-tuning mostly teaches *format and behaviour*; the *knowledge* comes from pre-training.
#
# ## The precise answer
#
# Both stages usually optimise the same next-token loss; what changes is the distribution of the data and which
# tokens carry the loss. The last bullet is a hypothesis with evidence behind it rather than a law:
#
# - LIMA (Zhou et al. 2023, arXiv 2305.11206) fine-tuned LLaMA 65B on 1,000 curated examples and argued for a
#   *superficial alignment hypothesis*: almost all knowledge is learned in pre-training, and alignment teaches
#   which format to use.
# - FLAN (Wei et al. 2021, arXiv 2109.01652) showed that instruction tuning on many tasks phrased as instructions
#   improves zero-shot performance on *unseen* tasks, and that the benefit appears only at sufficient scale.
#
# What the short answer leaves out:
#
# - The transfer from format to knowledge rests on how the knowledge was stored. Allen-Zhu & Li (2023, arXiv
#   2309.14316) pre-trained on synthetic biographies and found that Q/A fine-tuning on half of the people answers
#   questions about the other half only when pre-training stated each fact in several forms ("knowledge
#   augmentation": paraphrases, shuffled sentences); without it the knowledge "may be memorized but not
#   extractable, leading to 0% accuracy, regardless of subsequent instruction fine-tuning" (abstract).
# - Fine-tuning *can* add new facts, but Gekhman et al. (2024, arXiv 2405.05904) find that examples with new
#   knowledge are learned much more slowly than those consistent with what the model knows, and that once learned
#   they raise the model's tendency to hallucinate. Not measured here.
# - "Clean" matters: wrong answers in the fine-tuning set are learned too. Measured here, with 30% of them wrong.
#
# We test the hypothesis directly on peftlab's base model. Its pre-training corpus states facts about 120
# fictional people in several phrasings and in stories, never as questions. We fine-tune it on questions and
# answers about *half* of those people, then ask about the other half, and about strangers it has never read about.

# %%
import statistics
import torch
import matplotlib.pyplot as plt
from peftlab import data, load_base, exact_match, scale, studies
from peftlab.checkpoint import manifest
from peftlab.evaluate import complete, matches
from peftlab.evidence import compare
from peftlab.explore.report import table
from peftlab.explore.studies import claim_table, describe, final_table, plot_bands, plot_sweep

torch.manual_seed(0)
device = scale.device()  # PEFTLAB_SCALE=gpu opts in; unset: CPU, on any machine
model = load_base(device=device)

corpus = data.pretraining_corpus()
qa = data.qa_task()
strangers = data.stranger_qa()

# %% [markdown]
# ## The two kinds of data, side by side

# %%
WINDOW = 500  # words: the distinct share is measured on windows of the same size for both corpora


def corpus_stats(texts):
    words = " ".join(texts).split()
    windows = [words[i:i + WINDOW] for i in range(0, len(words) - WINDOW + 1, WINDOW)]
    per_window = statistics.mean(len(set(w)) / WINDOW for w in windows)  # does not fall as the corpus grows
    return (f"{len(texts):,}", f"{sum(len(t.encode()) for t in texts):,}", f"{len(set(words)):,}",
            f"{len(set(words)) / len(words):.3f}", f"{per_window:.3f} ({len(windows)} windows)",
            f"{statistics.mean(len(t) for t in texts):.0f}")

rows = [("pre-training (train split)", *corpus_stats(corpus["train"])),
        ("fine-tuning: Q/A train", *corpus_stats([e.text for e in qa["train"]]))]
display(table(rows, ["data", "documents", "bytes", "distinct words", "distinct / total words",
                     f"distinct / total in {WINDOW}-word windows", "mean length (chars)"]))

# %%
print("pre-training samples:")
for doc in corpus["train"][:4]:
    print("   ", doc)
print("\nfine-tuning samples (prompt | response):")
for ex in qa["train"][:4]:
    print("   ", repr(ex.prompt), "|", repr(ex.response))

# %% [markdown]
# The share of distinct words over a whole corpus falls as the corpus grows (a word seen once cannot be new again),
# so 0.013 against 0.096 compares sizes, not variety. Measured on windows of the same 500 words, the pre-training
# text is the more varied one: 0.407 of the words in a window are distinct against 0.168 in the Q/A set, whose
# questions repeat the same few templates. The pre-training text is also larger (about thirty times, in bytes), and
# has no question/answer format anywhere (a unit test checks that no `Q:` and no `?` appear in it). The fine-tuning
# set is small, uniform, and every example has the same shape: a question, then the answer, with the loss on
# the answer only.
#
# The Q/A split is **by person**: the 60 people in the fine-tuning set are never asked about at test time, and
# the 48 test people never appear in Q/A form during fine-tuning.

# %%
people = {k: {e.meta["person"] for e in v} for k, v in qa.items()}
print({k: len(v) for k, v in people.items()}, "people;", {k: len(v) for k, v in qa.items()}, "questions")
print("overlap between fine-tuning and test people:", len(people["train"] & people["test"]))

# %% [markdown]
# ## Run it: does the base model answer questions?

# %%
def scores(m):
    return {"fact completion (pre-training form)": exact_match(m, data.fact_completion()),
            "Q/A, fine-tuning people": exact_match(m, qa["train"]),
            "Q/A, held-out people": exact_match(m, qa["test"]),
            "Q/A, strangers (never in pre-training)": exact_match(m, strangers)}

before = scores(model)
for k, v in before.items():
    print(f"{k:40s} {v:6.1%}")
chance = statistics.mean(1 / len(data.ATTRIBUTES[e.meta["attribute"]]) for e in strangers)
print(f"a uniform guess among the values of the asked attribute would get {chance:.1%} of the strangers' questions")
print()
probe = qa["test"][0]
print(repr(probe.prompt), "->", repr(complete(model, [probe.prompt], 12)[0]))

# %% [markdown]
# The base model completes the facts in the form it read them, but does not answer the same facts when they
# are asked as questions: it continues the text in some other way. The knowledge is there; the format is not.

# %% [markdown]
# ## The study: Q/A fine-tuning, and what its transfer rests on
#
# Declared in `peftlab/studies/finetune_data.py` and run once by `python -m peftlab.studies run 10_data` (the
# results ship with peftlab). Every set-up is full fine-tuning with the loss on the answers, 200 steps at its own
# best learning rate (swept for 100 steps, chosen on validation answer loss), five seeds, scored on the 192 questions
# about the 48 held-out people:
#
# - **full**: the base model, questions about all 60 fine-tuning people;
# - **one_phrasing**: a second base model, `tiny_one`, pre-trained by the same recipe for the same steps on a corpus
#   that states each fact in *one* phrasing only (the one the fact-completion probe uses), as often as the four
#   phrasings together appear in the full corpus, and without the stories, which restate facts in other words:
#   the corpus without knowledge augmentation;
# - **wrong30**: the base model, with 30% of the 240 training answers replaced by another value of the asked
#   attribute (`data.wrong_answers`); the test answers stay right;
# - **people5 / people15 / people30**: the base model, questions about only the first 5, 15 or 30 people, for the
#   same 200 steps (equal compute: fewer people are seen more often).

# %%
results = studies.load_results("10_data")  # refuses a file whose config or base models differ from today's
print(describe(results))
one = manifest("tiny_one")
print(f"tiny_one: `{one['command']}`, fact completion {one['metrics']['fact_completion']:.1%} "
      f"(tiny: {manifest('tiny')['metrics']['fact_completion']:.1%}), pre-trained in {one['pretrain']['wall_time_s']:.0f} s")
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4))
plot_sweep(ax1, results)
plot_bands(ax2, results, ["full", "one_phrasing", "wrong30", "people5"], metric="exact_match")
ax2.set_ylim(0, 1)
plt.tight_layout()
plt.show()
display(final_table(results))

# %% [markdown]
# The left panel is the sweep each rate comes from (validation answer loss after 100 steps, the chosen rate circled);
# every chosen rate lies inside its grid. With the four-phrasing base, Q/A about 60 people makes the model answer
# 88.6% of the questions about the 48 others after 200 steps (the final table), from 0% before. The base pre-trained
# on one phrasing per fact completes its facts as well as the other (97.1% against 93.8%, printed above), yet answers
# only 29.8% of the held-out questions: the facts are stored in the form they were read, and a question reaches far
# fewer of them. That is Allen-Zhu & Li's finding, though the collapse here is partial, not the paper's 0%. With 30% of
# the training answers wrong, held-out exact match falls to 42.1%: the cost, 46.6 points (the claim check), is larger
# than the share of wrong answers itself, although every test answer asks about a fact the model read. Questions
# about the twelve
# strangers stay near chance after fine-tuning on all 60 people (13.3%, against 7.3% for a uniform guess among the
# asked attribute's values). The one-phrasing and wrong-answer runs met the plateau rule at step 100; the others had
# not by step 200, so their verdicts are about that budget.

# %%
PEOPLE = {"people5": 5, "people15": 15, "people30": 30, "full": 60}
curve = {k: compare([r["final"]["exact_match"] for r in results["runs"][label]["seeds"]], 0.0)
         for label, k in PEOPLE.items()}
fig, ax = plt.subplots(figsize=(6, 3.4))
ks = list(curve)
ax.errorbar(ks, [curve[k].estimate for k in ks], yerr=[[curve[k].estimate - curve[k].low for k in ks],
                                                        [curve[k].high - curve[k].estimate for k in ks]],
            fmt="o-", capsize=3, label="held-out people (192 questions)")
ax.set_xscale("log"); ax.set_xticks(ks); ax.set_xticklabels(ks); ax.set_ylim(0, 1)
ax.set(xlabel="people in the Q/A fine-tuning set (4 questions each)", ylabel="held-out exact match",
       title="200 steps each, own best rate; mean of 5 seeds, 95% CI")
ax.legend(fontsize=8)
plt.show()
print(", ".join(f"{k} people: {c.estimate:.1%} [{c.low:.1%}, {c.high:.1%}]" for k, c in curve.items()))

# %% [markdown]
# At the same 200 steps, held-out exact match grows with every doubling of the people in the fine-tuning set: 26.1%
# with 5 people, 62.0% with 15, 82.1% with 30, 88.6% with 60. Five people (20 questions) already teach the format,
# the answers being of the right kind, but how much of what the model read a question reaches keeps growing with the
# number of people asked about, far past the point where the format is learned.
#
# ## A live run, checked against the study
#
# One point of the study, trained here by the study's own code: "full", seed 0, at the chosen rate, for the first
# 50 steps. Its held-out answer loss must land inside the band where one more seed's run is expected (the study's
# 95% prediction interval at step 50); the cell after the table checks it. Its numbers vary a little from machine to
# machine, so nbval does not compare them.

# %%
LIVE_STEPS = 50
tuned, live = studies.live_run(results, "full", LIVE_STEPS, model, seed=0)  # the study's own training code
after = scores(tuned)

# %% tags=["nbval-ignore-output"]
print(f"live run: {LIVE_STEPS} steps at lr {results['runs']['full']['lr']:g}, held-out answer loss {live:.3f}")
display(table([(k, f"{before[k]:.1%}", f"{after[k]:.1%}") for k in before], ["accuracy", "base", f"after {LIVE_STEPS} Q/A steps"]))
for ex in qa["test"][:3] + strangers[:2]:
    print(f"{ex.prompt!r:45} -> {complete(tuned, [ex.prompt], 12)[0].split(chr(10))[0]!r:14} (truth {ex.response.strip()!r})")

# %%
print(studies.require_inside(results, "full", LIVE_STEPS, live))

# %% [markdown]
# Does a held-out answer need the fact to be stored? Split the held-out questions by whether the base model completes
# the same fact in its pre-training form, and score the live model on each part.

# %%
probes = data.fact_completion()
_, completions = exact_match(model, probes, return_predictions=True)
known = {(f.meta["person"], f.meta["attribute"]): matches(c, f.response) for f, c in zip(probes, completions)}
_, answers = exact_match(tuned, qa["test"], return_predictions=True)
parts = {True: [], False: []}
for e, a in zip(qa["test"], answers):
    parts[known[(e.meta["person"], e.meta["attribute"])]].append(matches(a, e.response))

# %% tags=["nbval-ignore-output"]
display(table([(label, len(parts[k]), f"{sum(parts[k]) / max(len(parts[k]), 1):.1%}")
               for k, label in ((True, "the base model completes the fact"), (False, "it does not"))],
              ["held-out questions whose fact ...", "questions", "live model's exact match"]))

# %% [markdown]
# The live run shows what the study's band promises in one run: after 50 steps the fine-tuning people's questions
# are answered almost perfectly, most held-out people's questions too, the strangers' hardly, and fact completion in
# the pre-training form is nearly kept (its table above).
#
# The split by what the base model completes is lopsided: it completes the facts of 180 of the 192 held-out
# questions (a count fixed by the base model), so the other part has only 12 questions, and one question moves its
# share by 8 points: too few to compare the two shares. Completion in the first phrasing is also a strict test of
# "stored": a fact the base model does not complete greedily may still rank first among its candidates, or be
# reached through another phrasing it read.
#
# ## Claim check
#
# The study's claims, each with the margin declared before the run: a difference of the means over five seeds with
# its 95% Welch interval, or, against the base model, the mean against the base model's own value (one number) with
# its one-sample interval; the verdict is what `peftlab.evidence.compare` reads off it.

# %%
display(claim_table(results))

# %% [markdown]
# Three verdicts hold, far outside their margins: fine-tuning on some people's questions transfers to others'; it
# rests on the knowledge augmentation of pre-training; and wrong answers in the fine-tuning set cost held-out
# accuracy. The fourth does not hold: 15 people end 26.7 points below 60 at equal steps [-30.1, -23.3], outside the
# declared 10-point margin. LIMA's "only limited instruction tuning data is necessary" is about teaching a 65B model
# a format; here, at 3.3M parameters, more people keep paying off well beyond the format. Fine-tuning *can* add new
# facts, but that is another experiment (Gekhman et al. 2024): every set-up here asks only about facts the model read.
#
# Size is context, not a claim to test: the pre-training corpus here is far larger than the Q/A fine-tuning set
# (the byte counts are in the table above), as LIMA's 1,000 examples are against trillions of pre-training tokens.

# %% [markdown]
# ## Explore: how much fine-tuning data, and how long?
#
# Choose how many people the Q/A set covers and how many steps to train, then press the button. Even a handful of
# people teaches the format, and the held-out accuracy follows the trained-people accuracy; train much longer on
# very few people and watch what happens to the held-out people and to fact completion.

# %% [markdown]
# ![The explorer below as it first appears, at its default settings](figures/10_explorer.png)
#
# *The explorer below as it first appears, photographed in JupyterLab by `scripts/explorer_pictures.py`; run
# the cell for the live one.*

# %% tags=["explorer", "nbval-ignore-output"]
from peftlab.explore.finetune_data import QAFineTuneExplorer
QAFineTuneExplorer(load_base(device=device)).show()

# %% [markdown]
# ## Takeaways for the interview
#
# - Pre-training data: large, varied, unlabeled; fine-tuning data: small, uniform, (prompt, response) pairs,
#   usually with the loss on the response only.
# - Measured here (five seeds each): fine-tuning on questions about 60 people made the model answer 88.6% of the
#   questions about 48 *other* people whose facts it had only read in pre-training, and did nothing for people it
#   had never read about (13.3%, near the 7.3% of a guess).
# - That transfer rests on how pre-training stated the facts: with one phrasing per fact, 29.8% (Allen-Zhu & Li's
#   knowledge augmentation). And "clean" matters: 30% wrong answers cut it to 42.1%.
# - So "fine-tuning teaches format" holds when the knowledge is already in the model; it does not create knowledge
#   cheaply, and it can teach the model to answer confidently when it should not.
#
# **Follow-up questions to expect**
# - *Why mask the prompt tokens in the loss?* The model should learn to produce responses, not to model questions (notebook 09).
# - *How would you add new knowledge?* Continued pre-training on documents, or retrieval; Q/A fine-tuning on new facts
#   is slow and costs old knowledge (notebook 08).
# - *How much fine-tuning data is enough?* For format, little (LIMA: 1,000 examples); for a new domain, much more (notebook 20).
