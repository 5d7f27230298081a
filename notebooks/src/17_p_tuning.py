# %% [markdown]
# # 17 · What is P-tuning?
#
# **The interview question.** *"What is P-tuning, and how does it differ from prompt tuning?"*
#
# **The short answer an interviewer expects**
# - Like prompt tuning, trainable virtual tokens go into the input of a frozen model.
# - Unlike prompt tuning, the virtual token embeddings come out of a small *prompt encoder* (an LSTM or an MLP)
#   rather than being trained directly; the paper argues this makes them depend on each other and trains better.
# - After training, the encoder's output is all that is needed.
#
# ## The precise answer
#
# Liu et al. 2021, *GPT Understands, Too* (arXiv 2103.10385): trainable inputs $h_1, \dots, h_n$ pass through a
# bidirectional LSTM and a two-layer ReLU MLP, and the outputs are the virtual token embeddings:
#
# $$P = \mathrm{MLP}\big(\mathrm{BiLSTM}(h_1, \dots, h_n)\big) \in \mathbb{R}^{n \times d}, \qquad x = [\,P\,;\,E(\text{tokens})\,].$$
#
# The paper placed the virtual tokens inside a template around the input and, with this encoder, reported
# 64% precision@1 on the LAMA knowledge probe and GPT-style models matching BERT-style ones on SuperGLUE. What the
# short answer leaves out:
#
# - **The encoder is large.** A 2-layer bidirectional LSTM of width $k$ has $8k(d + k + 2) + 8k(3k + 2)$
#   parameters; with $k = d$ that can be as large as a small model itself (counted below). It exists only during
#   training: its output $P$ is computed once and kept, $n \cdot d$ numbers, exactly what prompt tuning ships.
# - **The benefit is about optimisation**, not capacity: the final $P$ is a matrix any prompt tuning could have
#   reached. So the question to measure is convergence speed and stability, against plain prompt tuning.
# - **P-tuning v2** (Liu et al. 2021, arXiv 2110.07602) is a different method under a similar name: prompts in
#   every layer (prefix tuning, notebook 07), 0.1-3% of the parameters, comparable to fine-tuning across scales.

# %%
import copy
import statistics

import matplotlib.pyplot as plt
import torch

from peftlab import count_parameters, load_base, prompt, ptuning, scale
from peftlab.explore.report import claim_check, table
from peftlab.explore.virtual_tokens import VirtualTokenExplorer

torch.manual_seed(0)
GPU = scale.gpu()  # PEFTLAB_SCALE=gpu opts in to the larger setting; unset: CPU, on any machine
device = "cuda" if GPU else "cpu"
STEPS, BATCH, N_EVAL, SEEDS = (200, 16, 192, 5) if GPU else (40, 8, 48, 3)  # larger where a GPU is present
N_TOKENS, THRESHOLD = 20, 4.0  # prompt length; "converged" = 5-step mean training loss below this

model = load_base(device=device)
d = model.config.d_model
print(f"base model: {count_parameters(model).total:,} parameters, d = {d}")

# %% [markdown]
# ## The encoders, counted
#
# `ptuning.add` builds the encoder with PEFT's shapes: LSTM (2 layers, bidirectional, width $k$) then
# $\mathrm{Linear}(2k, 2k) \to \mathrm{ReLU} \to \mathrm{Linear}(2k, d)$; or an MLP
# $\mathrm{Linear}(d, k) \to \mathrm{ReLU} \to \mathrm{Linear}(k, k) \to \mathrm{ReLU} \to \mathrm{Linear}(k, d)$.
# Width $k = d$ by default.

# %%
total = count_parameters(model).total
rows = []
for name, make, formula in [
        ("prompt tuning (no encoder)", lambda m: prompt.add(m, N_TOKENS), prompt.num_parameters(N_TOKENS, d)),
        ("P-tuning, LSTM encoder", lambda m: ptuning.add(m, N_TOKENS, "lstm"),
         ptuning.num_parameters(N_TOKENS, d, d, "lstm")),
        ("P-tuning, MLP encoder", lambda m: ptuning.add(m, N_TOKENS, "mlp"),
         ptuning.num_parameters(N_TOKENS, d, d, "mlp"))]:
    n = count_parameters(make(copy.deepcopy(model))).trainable
    rows.append((name, n, formula))
display(table([(name, f"{n:,}", f"{f:,}", f"{100 * n / total:.1f}%", f"{N_TOKENS * d:,}") for name, n, f in rows],
              [f"n = {N_TOKENS} virtual tokens", "trainable (counted)", "closed form", "% of base",
               "kept after training"]))

# %% [markdown]
# ## Run it: convergence and spread over seeds
#
# The Q/A task of notebook 06 (held-out people). Each variant trains from several seeds with the same steps
# and batch; learning rates are those that suited each in a short sweep (0.1 for the bare prompt, 1e-2 for the
# encoders). We record the steps until the 5-step mean training loss first falls below the threshold, the final
# training loss, and the held-out answer loss.

# %%
explorer = VirtualTokenExplorer(model, batch_size=BATCH, n_eval=N_EVAL)
variants = {"none (prompt tuning)": ("prompt", "vocab"), "MLP": ("ptuning", "mlp"), "LSTM": ("ptuning", "lstm")}
runs = {v: [explorer.run(method, N_TOKENS, option, steps=STEPS, seed=s) for s in range(SEEDS)]
        for v, (method, option) in variants.items()}
trained = explorer.last_model  # LSTM encoder, last seed: kept for the fold below


def steps_to(losses, threshold=THRESHOLD, k=5):
    """First step (1-based) whose k-step mean loss is below the threshold; None if never."""
    for i in range(len(losses)):
        window = losses[max(0, i - k + 1):i + 1]
        if sum(window) / len(window) < threshold:
            return i + 1
    return None


def summary(values, fmt="{:.3f}"):
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


reached = {v: [steps_to(r["loss"]) for r in rs] for v, rs in runs.items()}
final = {v: [sum(r["loss"][-5:]) / 5 for r in rs] for v, rs in runs.items()}
heldout = {v: [r["heldout_loss"] for r in rs] for v, rs in runs.items()}
display(table([(v, " / ".join("never" if s is None else str(s) for s in reached[v]), summary(final[v]),
                summary(heldout[v])) for v in runs],
              ["encoder", f"steps to loss < {THRESHOLD} (per seed)", "final training loss (mean ± sd)",
               "held-out answer loss (mean ± sd)"]))

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
colors = {"none (prompt tuning)": "#4c72b0", "LSTM": "#dd8452", "MLP": "#55a868"}
for v, rs in runs.items():
    for i, r in enumerate(rs):
        ax1.plot(r["loss"], color=colors[v], alpha=0.7, label=v if i == 0 else None)
ax1.axhline(THRESHOLD, color="gray", ls="--", lw=1)
ax1.set(xlabel="step", ylabel="training loss (answer tokens)", title=f"{SEEDS} seeds each, n = {N_TOKENS}")
ax1.legend(fontsize=8)
for i, v in enumerate(runs):
    ax2.scatter([i] * SEEDS, heldout[v], color=colors[v])
ax2.set_xticks(range(len(runs)), list(runs), fontsize=8)
ax2.set(ylabel="held-out answer loss", title="spread over seeds", xlim=(-0.5, len(runs) - 0.5))
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Drop the encoder: cache its output
#
# `ptuning.fold` runs the trained LSTM encoder (last seed above) once and keeps $P$. The model becomes a plain
# prompt-tuning model (saved and loaded by `peftlab.prompt`) with the same logits and the same greedy answers.

# %%
ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0)).to(device)
with torch.no_grad():
    before, answers = trained(ids), trained.generate(ids[:, :8], 6)
    n_before = count_parameters(trained).trainable
    ptuning.fold(trained)
    print(f"trainable {n_before:,} -> {count_parameters(trained).trainable:,}; now a {trained.method!r} model")
    print("same logits:", torch.allclose(trained(ids), before, atol=1e-5),
          "| same greedy tokens:", torch.equal(trained.generate(ids[:, :8], 6), answers))

# %% [markdown]
# ## Claim check

# %%
def mean_steps(v):
    got = [s if s is not None else STEPS + 1 for s in reached[v]]  # never = more than the budget
    return statistics.mean(got)


plain, mlp, lstm = runs
faster = min(mean_steps(lstm), mean_steps(mlp)) < mean_steps(plain)
steadier = min(statistics.stdev(heldout[lstm]), statistics.stdev(heldout[mlp])) < statistics.stdev(heldout[plain])
display(claim_check([
    ("soft prompts come from an LSTM/MLP encoder", "Liu et al.: BiLSTM + 2-layer ReLU MLP",
     f"counted = closed form for LSTM and MLP: {all(n == f for _, n, f in rows)}",
     all(n == f for _, n, f in rows)),
    ("the encoder speeds up convergence",
     "paper: the encoder gives better, more stable prompts than training them directly",
     f"mean steps to loss < {THRESHOLD}: none {mean_steps(plain):.1f}, LSTM {mean_steps(lstm):.1f}, "
     f"MLP {mean_steps(mlp):.1f} (never = {STEPS + 1})",
     "faster with an encoder here" if faster else "not faster here"),
    ("the encoder reduces variance", "same",
     f"held-out loss sd: none {statistics.stdev(heldout[plain]):.3f}, LSTM {statistics.stdev(heldout[lstm]):.3f}, "
     f"MLP {statistics.stdev(heldout[mlp]):.3f}",
     "less spread with an encoder here" if steadier else "not less spread here"),
]))

# %% [markdown]
# Not a row, because it cannot come out otherwise: after training the encoder is dropped and only its output P,
# n × d numbers, is kept (`ptuning.fold`); the cell above checks that the logits stay the same.

# %% [markdown]
# Read the verdicts with the setting in mind: one small model, one task, short runs, and learning rates tuned
# only roughly for each variant. The paper's gains were on knowledge probing and SuperGLUE with much larger
# models, and with the prompts placed inside a template rather than in front.
#
# ## Explore: encoders and prompt length
#
# Choose `lstm` or `mlp` and a length, train, and compare loss curves; the legend holds the held-out answer loss.

# %%
check = explorer.run("ptuning", 2, "mlp", steps=3)
print(f"n = 2, MLP encoder, 3 steps: {check['trainable']:,} trainable = {ptuning.num_parameters(2, d, d, 'mlp'):,}")

# %% tags=["nbval-skip"]
explorer.show("ptuning")

# %% [markdown]
# ## Takeaways for the interview
#
# - P-tuning = prompt tuning whose virtual tokens come from a prompt encoder (BiLSTM + MLP, or an MLP).
# - The encoder can be as large as a small model while training; it is dropped afterwards, leaving $n \cdot d$
#   numbers, the same as prompt tuning. Its purpose is easier optimisation, so measure convergence and spread.
# - On this small model the comparison above decides whether it helped; do not assume it does.
#
# **Follow-up questions to expect**
# - *P-tuning vs P-tuning v2?* v1: encoder-produced prompts at the input. v2: trainable prompts in every layer
#   (like prefix tuning), which closed the gap to fine-tuning on smaller models and hard sequence tasks.
# - *Why an LSTM?* The authors wanted the virtual tokens to depend on each other and to be less "discrete" than
#   independently trained embeddings; an MLP encoder is the common simpler alternative.
# - *What is shipped?* The cached output $P$: one $n \times d$ matrix per task.
