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
# What the short answer leaves out: fine-tuning *can* inject new facts, but slowly and at the cost of other
# knowledge; and "format" includes what to answer when the model does not know.
#
# We test the hypothesis directly on peftlab's base model. Its pre-training corpus states facts about 120
# fictional people in several phrasings and in stories, never as questions. We fine-tune it on questions and
# answers about *half* of those people, then ask about the other half, and about strangers it has never read about.

# %%
import statistics
import torch
import matplotlib.pyplot as plt
from peftlab import data, load_base, exact_match, scale
from peftlab.evaluate import complete
from peftlab.explore.report import table, claim_check
from peftlab.train import train

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


def describe(texts):
    words = " ".join(texts).split()
    windows = [words[i:i + WINDOW] for i in range(0, len(words) - WINDOW + 1, WINDOW)]
    per_window = statistics.mean(len(set(w)) / WINDOW for w in windows)  # does not fall as the corpus grows
    return (f"{len(texts):,}", f"{sum(len(t.encode()) for t in texts):,}", f"{len(set(words)):,}",
            f"{len(set(words)) / len(words):.3f}", f"{per_window:.3f} ({len(windows)} windows)",
            f"{statistics.mean(len(t) for t in texts):.0f}")

rows = [("pre-training (train split)", *describe(corpus["train"])),
        ("fine-tuning: Q/A train", *describe([e.text for e in qa["train"]]))]
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
#
# ## Fine-tune on Q/A about half of the people
#
# Full fine-tuning, loss on the answers only, a few hundred examples, seconds on a laptop CPU.

# %%
STEPS = 60
hist = train(model, qa["train"], steps=STEPS, lr=1e-4, batch_size=16, progress=False)
print(f"{hist.steps} steps, {hist.wall_time:.1f} s, loss {hist.loss[0]:.3f} -> {hist.loss[-1]:.3f}")
after = scores(model)
display(table([(k, f"{before[k]:.1%}", f"{after[k]:.1%}") for k in before], ["accuracy", "base", "after Q/A fine-tuning"]))

# %%
fig, ax = plt.subplots(figsize=(7, 3))
labels = ["facts", "Q/A: fine-tuned\npeople", "Q/A: held-out\npeople", "Q/A: strangers"]
x = range(len(labels))
ax.bar([i - 0.2 for i in x], list(before.values()), width=0.4, label="base")
ax.bar([i + 0.2 for i in x], list(after.values()), width=0.4, label=f"after {STEPS} Q/A steps")
ax.set_xticks(list(x)); ax.set_xticklabels(labels); ax.set_ylim(0, 1.05); ax.set_ylabel("exact match")
ax.legend(); plt.show()

# %%
for ex in qa["test"][:3] + strangers[:2]:
    print(f"{ex.prompt!r:45} -> {complete(model, [ex.prompt], 12)[0].split(chr(10))[0]!r:14} (truth {ex.response.strip()!r})")

# %% [markdown]
# Read the three Q/A columns together:
#
# - **held-out people** went from near zero to most questions answered correctly, although not one of
#   their questions was in the fine-tuning set. Fine-tuning taught the *format*; the answers come from what
#   pre-training stored.
# - **strangers** stay near chance: 12.5% of their 48 questions, where a uniform guess among the values of the
#   asked attribute gets 7.3% (printed above); the answers are guesses from the right category. No amount of
#   format supplies
#   knowledge the model never read. The model now answers them fluently and wrongly, which is the seed of
#   hallucination.
# - **fact completion** in the pre-training form is kept or nearly kept at this small number of steps.
#
# ## Claim check

# %%
display(claim_check([
    ("fine-tuning teaches format, knowledge comes from pre-training", "LIMA's superficial alignment hypothesis",
     f"held-out Q/A {before['Q/A, held-out people']:.0%} → {after['Q/A, held-out people']:.0%}; "
     f"strangers {after['Q/A, strangers (never in pre-training)']:.0%}",
     after["Q/A, held-out people"] >= 0.7 and after["Q/A, strangers (never in pre-training)"] <= 0.2),
]))

# %% [markdown]
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
# - Measured here: fine-tuning on questions about 60 people made the model answer questions about 48 *other*
#   people whose facts it had only read in pre-training, and did nothing for people it had never read about.
# - So "fine-tuning teaches format" holds when the knowledge is already in the model; it does not create knowledge
#   cheaply, and it can teach the model to answer confidently when it should not.
#
# **Follow-up questions to expect**
# - *Why mask the prompt tokens in the loss?* The model should learn to produce responses, not to model questions (notebook 09).
# - *How would you add new knowledge?* Continued pre-training on documents, or retrieval; Q/A fine-tuning on new facts
#   is slow and costs old knowledge (notebook 08).
# - *How much fine-tuning data is enough?* For format, little (LIMA: 1,000 examples); for a new domain, much more (notebook 20).
