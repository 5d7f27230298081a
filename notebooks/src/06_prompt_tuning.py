# %% [markdown]
# # 06 · What is prompt tuning?
#
# **The interview question.** *"What is prompt tuning? How does it differ from prompt engineering and from LoRA,
# and when does it work?"*
#
# **The short answer an interviewer expects**
# - Freeze the whole model; learn a few "soft prompt" vectors that are prepended to the input embeddings.
# - The soft prompt is continuous: its vectors need not be the embedding of any real token, so it is learned by
#   gradient descent instead of written by hand.
# - Tiny: only $n \times d$ parameters per task, and one frozen model serves every task in a mixed batch.
#
# ## The precise answer
#
# Lester et al. 2021, *The Power of Scale for Parameter-Efficient Prompt Tuning* (arXiv 2104.08691): for input
# tokens with embeddings $E(x) \in \mathbb{R}^{s \times d}$ and a soft prompt $P \in \mathbb{R}^{n \times d}$, the
# frozen model runs on the concatenation
#
# $$[\,P\,;\,E(x)\,] \in \mathbb{R}^{(n + s) \times d}, \qquad \text{only } P \text{ trains: } n \cdot d \text{ parameters.}$$
#
# What the short answer leaves out:
#
# - **Scale.** On T5 the gap to full fine-tuning ("model tuning") is large for small models and closes only at
#   the largest size, XXL with 11B parameters, where prompt tuning matches it with over 20,000 times fewer
#   task-specific parameters. At small scale, prompt tuning is a weak method; this notebook measures how weak on a
#   3.3M-parameter model.
# - **Length and initialisation.** The paper's default is 100 tokens; going past 20 gave little. Initialising
#   $P$ from the embeddings of class labels beat sampled vocabulary, which beat random init, and the differences
#   vanished at 11B.
# - **Plumbing.** The virtual tokens take positions in the context window, and masks and labels must account
#   for them: with $n$ virtual tokens, logits come back for $n + s$ positions. Here the model is causal with right
#   padding, so the virtual tokens sit in front of every real token and need no mask; `peftlab.prompt` drops
#   their $n$ logits so the output lines up with the input ids and labels again, and the one training loop,
#   memory report and evaluation of peftlab work unchanged.
#
# Prefix tuning (notebook 07) puts trainable vectors into every layer instead of the input only; P-tuning
# (notebook 17) produces the prompt with a small encoder network.

# %%
import copy

import matplotlib.pyplot as plt
import torch

from peftlab import count_parameters, data, exact_match, load_base, lora, prompt
from peftlab.explore.report import claim_check, table
from peftlab.explore.virtual_tokens import VirtualTokenExplorer
from peftlab.tokenizer import ByteTokenizer
from peftlab.evaluate import complete, evaluate_loss
from peftlab.train import train

torch.manual_seed(0)
GPU = torch.cuda.is_available()
device = "cuda" if GPU else "cpu"
# training steps and held-out examples; a larger setting where a GPU is present
STEPS, BATCH, N_EVAL = (300, 16, 192) if GPU else (50, 8, 64)

model = load_base(device=device)
d = model.config.d_model
print(f"base model: {count_parameters(model).total:,} parameters, d_model = {d}, context {model.config.max_seq_len}")

# %% [markdown]
# ## Prompt tuning by hand, in a few lines
#
# The model accepts `inputs_embeds=` in place of token ids. A soft prompt is a parameter of shape $(n, d)$;
# expand it over the batch, put it in front of the embedded ids, run the frozen model, drop the first $n$ logits.
# Then the same with `peftlab.prompt`, with the same $P$.

# %%
tok = ByteTokenizer()
n = 8
P = torch.nn.Parameter(torch.randn(n, d, device=device) * 0.03)  # (n, d)
ids = torch.tensor([tok.encode("Q: Where does Tevel live?\nA:")], device=device)  # (1, s)


def prompt_tuning_by_hand(ids):
    x = torch.cat([P.expand(ids.shape[0], -1, -1), model.embed_tokens(ids)], dim=1)  # (batch, n + s, d)
    return model(inputs_embeds=x)[:, n:]  # (batch, s, vocab): virtual positions dropped


wrapped = prompt.add(copy.deepcopy(model), n_tokens=n)
with torch.no_grad():
    wrapped.soft_prompt.weight.copy_(P)
    torch.testing.assert_close(prompt_tuning_by_hand(ids), wrapped(ids))
print("by hand == peftlab.prompt on the same P:", True, "| logits shape", tuple(wrapped(ids).shape))
print(f"trainable: {count_parameters(wrapped).trainable:,} = n × d = {n} × {d}")

# %% [markdown]
# A soft prompt initialised from a text is exactly that text's embeddings, so before any training it must act
# like the text written in front of the input: the same logits, the same greedy continuation. This checks the
# plumbing (positions, the dropped logits, and `generate` with its KV cache) against plain prompting.

# %%
text = "Tevel lives in"
as_text = prompt.add(copy.deepcopy(model), n_tokens=len(tok.encode(text)), init="text", init_text=text)
question = torch.tensor([tok.encode(" Ostrel. Tevel is a")], device=device)
with torch.no_grad():
    context = torch.cat([torch.tensor([tok.encode(text)], device=device), question], dim=1)
    same = torch.allclose(as_text(question), model(context)[:, -question.shape[1]:], atol=1e-5)
gen_soft = tok.decode(as_text.generate(question, 10)[0, question.shape[1]:])
gen_text = tok.decode(model.generate(context, 10)[0, context.shape[1]:])
print("soft prompt from text == text as context (logits):", same)
print(f"greedy continuation: {gen_soft!r} vs {gen_text!r}")

# %% [markdown]
# ## Run it: prompt length and initialisation on the Q/A task
#
# The base model read facts about 120 people in pre-training, never as questions (notebook 10). We train on
# questions about half of them and ask about the other half: held-out *people*. Each run is a fresh soft prompt
# on the frozen base, the same number of steps and batch size for all. We report the held-out loss on the answer
# tokens and the exact-match accuracy of greedy answers. `VirtualTokenExplorer` (in `peftlab.prompt`) holds the
# run, so the widget below does the same thing; the three initialisations are random (normal with the embedding
# table's spread), vocabulary (embeddings of sampled printable bytes) and text (the task's format, `Q: ... A:`,
# repeated to fill the prompt).

# %%
explorer = VirtualTokenExplorer(model, batch_size=BATCH, n_eval=N_EVAL)
qa, test = explorer.qa, explorer.test
print(f"Q/A: {len(qa['train'])} train examples, {len(test)} held-out used here; lr {explorer.LR['prompt']}")
runs = {}
for n_tokens in (1, 5, 20, 50):
    runs[("vocab", n_tokens)] = explorer.run("prompt", n_tokens, "vocab", steps=STEPS)
tuned = explorer.last_model  # the 50-token prompt, kept for a look at its answers below
for init in ("random", "text"):
    runs[(init, 20)] = explorer.run("prompt", 20, init, steps=STEPS)
display(table([(f"{n_tokens}", init, f"{r['trainable']:,}", f"{r['loss'][0]:.3f}", f"{r['heldout_loss']:.3f}",
                f"{r['accuracy']:.1%}") for (init, n_tokens), r in runs.items()],
              ["tokens n", "init", "trainable", "first-step loss", "held-out answer loss", "held-out exact match"]))

# %% [markdown]
# ## The gap: LoRA and full fine-tuning, same steps, same data

# %%
def baseline(name, make, lr):
    torch.manual_seed(0)
    m = make(copy.deepcopy(model))
    hist = train(m, qa["train"], steps=STEPS, lr=lr, batch_size=BATCH, progress=False)
    return {"loss": hist.loss, "heldout_loss": evaluate_loss(m, test, loss_on="response"),
            "accuracy": exact_match(m, test), "trainable": count_parameters(m).trainable}


others = {"LoRA r=8 (q, v)": baseline("lora", lambda m: lora.add(m, r=8, alpha=16), 3e-3),
          "full fine-tuning": baseline("full", lambda m: m, 3e-4)}
best_prompt = min(runs.values(), key=lambda r: r["heldout_loss"])
best_key = next(k for k, r in runs.items() if r is best_prompt)
rows = [(f"prompt tuning, {best_key[1]} tokens, {best_key[0]} init (best above)", best_prompt)] + list(others.items())
total = count_parameters(model).total
display(table([(name, f"{r['trainable']:,}", f"{100 * r['trainable'] / total:.2f}%", f"{r['heldout_loss']:.3f}",
                f"{r['accuracy']:.1%}") for name, r in rows],
              ["method", "trainable", "% of base", "held-out answer loss", "held-out exact match"]))

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
smooth = lambda xs, k=5: [sum(xs[max(0, i - k + 1):i + 1]) / len(xs[max(0, i - k + 1):i + 1]) for i in range(len(xs))]
for (init, n_tokens), r in runs.items():
    if init == "vocab":
        ax1.plot(smooth(r["loss"]), label=f"prompt, n={n_tokens}")
for name, r in others.items():
    ax1.plot(smooth(r["loss"]), "--", label=name)
ax1.set(xlabel="step", ylabel="training loss (answer tokens, 5-step mean)", title="Prompt length vs LoRA and full FT")
ax1.legend(fontsize=8)
lengths = [1, 5, 20, 50]
ax2.plot(lengths, [runs[("vocab", k)]["heldout_loss"] for k in lengths], "o-", label="vocab init")
for init, marker in (("random", "s"), ("text", "^")):
    ax2.plot([20], [runs[(init, 20)]["heldout_loss"]], marker, label=f"{init} init")
for name, r in others.items():
    ax2.axhline(r["heldout_loss"], ls="--", lw=1, color="gray")
    ax2.text(1, r["heldout_loss"], name, fontsize=8, va="bottom")
ax2.set_xscale("log")
ax2.set(xlabel="prompt length n (log)", ylabel="held-out answer loss", title="Length and init, after the same steps")
ax2.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Read the table and the plot together. A single virtual token hardly moves the frozen model; at the same number
# of steps, every longer prompt did better, up to the 50 tokens tried. The three initialisations end close
# together. Against LoRA and full
# fine-tuning, trained for the same steps on the same data, prompt tuning is far behind on this small model,
# which is what the paper's smallest T5 models show too. What the answers look like:

# %%
for ex in test[:4]:
    got = complete(tuned, [ex.prompt], 12)[0].split("\n")[0]
    print(f"{ex.prompt.splitlines()[0]!r:45} -> {got!r:14} (truth {ex.response.strip()!r})")

# %% [markdown]
# ## Claim check

# %%
lester_params = 100 * 4096  # 100 tokens × T5-XXL's d_model of 4096
gap = min(r["heldout_loss"] for r in others.values())
by_length = {k: runs[("vocab", k)]["heldout_loss"] for k in lengths}
inits = {i: runs[(i, 20)]["heldout_loss"] for i in ("random", "vocab", "text")}
spread = max(inits.values()) - min(inits.values())
display(claim_check([
    ("only the soft prompt trains: n × d parameters", "Lester et al.: P ∈ R^{n×d}, model frozen",
     f"{runs[('vocab', 20)]['trainable']:,} trainable for n = 20, d = {d}",
     runs[("vocab", 20)]["trainable"] == prompt.num_parameters(20, d)),
    (">20,000x fewer task parameters", "T5-XXL 11B, 100 tokens",
     f"11e9 / (100 × 4096) = {11e9 / lester_params:,.0f}x; here {total / runs[('vocab', 20)]['trainable']:,.0f}x",
     11e9 / lester_params > 20_000),
    ("matches full fine-tuning", "only at ~11B (T5-XXL); well behind at small sizes",
     f"3.3M model: answer loss {best_prompt['heldout_loss']:.3f} (prompt) vs {gap:.3f} (LoRA / full FT)",
     "a clear gap at this size" if best_prompt["heldout_loss"] > gap + 0.5 else "no clear gap here"),
    ("longer prompts help, flat beyond ~20", "Lester Fig. 3(a): little gain beyond 20 tokens (large sizes)",
     "answer loss n=1/5/20/50: " + " / ".join(f"{v:.2f}" for v in by_length.values()),
     "longer helps here" if by_length[50] < by_length[20] < by_length[1] else "not monotone here"),
    ("initialisation matters", "class labels > vocab > random at small sizes; no difference at 11B",
     "answer loss random/vocab/text: " + " / ".join(f"{v:.2f}" for v in inits.values()),
     "small effect here" if spread < 0.3 else "a clear effect here"),
]))

# %% [markdown]
# ## Explore: prompt length and initialisation
#
# Pick a length, an initialisation and a number of steps, and train: each click trains a fresh soft prompt on
# the frozen base and adds its loss curve to the plot, with the held-out answer loss in the legend. The logic is
# `VirtualTokenExplorer.run`, which returns plain numbers; the widget only draws them.

# %%
check = explorer.run("prompt", 4, "text", steps=3)
print(f"4 tokens, text init, 3 steps: {check['trainable']:,} trainable, {len(check['loss'])} losses, "
      f"held-out answer loss {check['heldout_loss']:.3f}")

# %% tags=["nbval-skip"]
explorer.show("prompt")

# %% [markdown]
# ## Takeaways for the interview
#
# - Prompt tuning learns $n \times d$ numbers in front of the input of a frozen model: a few thousand
#   parameters here, one small file per task, and tasks can share one batch on one model.
# - It is weak at small scale and catches up with full fine-tuning only on very large models (T5-XXL, 11B, in
#   Lester et al.). On our 3.3M-parameter model it stays far behind LoRA and full fine-tuning at the same steps.
# - Longer prompts helped here up to the 50 tokens tried (the paper saw little gain beyond 20 on large models);
#   the initialisations ended close together here, and the paper found their differences vanish at 11B.
# - The virtual tokens use context and need masks and labels padded for them; dropping their logits keeps the
#   rest of the pipeline unchanged.
#
# **Follow-up questions to expect**
# - *Prompt tuning vs prompt engineering?* Engineering picks discrete tokens by hand; tuning learns continuous
#   vectors by gradient descent, with the model frozen in both.
# - *Why is it weaker than LoRA?* It can only steer the model through attention to $n$ extra positions at the
#   input; LoRA changes weights in every layer. Prefix tuning (07) adds vectors to every layer.
# - *How do you serve it?* One frozen model; each request carries its task's $P$, so a batch can mix tasks.
