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

from peftlab import count_parameters, data, load_base, prompt, studies
from peftlab.evaluate import complete
from peftlab.explore.studies import claim_table, describe, final_table, plot_bands, plot_live, plot_sweep
from peftlab.explore.virtual_tokens import VirtualTokenExplorer
from peftlab.tokenizer import ByteTokenizer

torch.manual_seed(0)
device = "cpu"  # the compared outputs are CPU runs; the study itself runs anywhere (`--device cuda`)
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
# ## The study: six set-ups, five seeds each, every learning rate swept
#
# A minute of training cannot settle these questions: a soft prompt learns slowly, so a short run measures speed,
# not what the method can reach. The comparison is therefore a study, declared in `peftlab/studies/prompt_tuning.py`
# and run once by `python -m peftlab.studies run 06_prompt` (its results ship with peftlab). The questions about
# people the base model read about in pre-training, never as questions (notebook 10): train on half of the people,
# test on the other half. Every set-up gets the same 400 steps at batch 16; its learning rate is chosen on the
# validation people, never on the test ones; then five seeds train at that rate. The margins of the claims were
# written into the study before it ran.

# %%
results = studies.load_results("06_prompt")  # refuses a file whose config or base model differs from today's
study = studies.get("06_prompt")
print(describe(results))

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4))
plot_sweep(ax1, results)
plot_bands(ax2, results)
ax2.set_ylim(top=3.5)
plt.tight_layout()
plt.show()
display(final_table(results))

# %% [markdown]
# The left panel is the sweep the learning rates come from: validation answer loss after 100 steps, one dot per
# seed. The right panel is every set-up's test answer loss over training, the line the mean of five seeds and the
# band its 95% interval; a dotted line marks the step where the validation loss stopped improving by 1% over the
# last quarter of the run (no line: still improving at 400 steps). The table gives where each set-up ends.
#
# Two things to read before the verdicts. First, the chosen rate sits at an edge of its grid for five of the six
# set-ups (0.3, the top of the prompt grid and Lester et al.'s own rate, for 20, 20-label and 50 tokens; the bottom,
# 1e-4, for full fine-tuning; 0.03, the bottom, for 5 tokens): a wider grid could still move them. Second, most
# curves are still falling at step 400 (the table's plateau column), so every verdict below is about a 400-step
# budget at batch 16, equal for all, not about converged runs. Prompt tuning is the method that needs the steps
# most: Lester et al. train for 30,000.

# %% [markdown]
# ## A live run, checked against the study
#
# One point of the study, trained here: prompt tuning with 20 tokens, seed 0, at the study's chosen learning rate,
# for the first 100 steps, by the study's own training code (`studies.live_run`). It must land inside the band where
# one more seed's run is expected (the study's 95% prediction interval at step 100). Its numbers vary a little from
# machine to machine, so nbval does not compare them; the next cell checks that they fall inside the band.

# %%
LIVE, SEED, LIVE_STEPS = "prompt20", 0, 100
qa = data.qa_task()
tuned, live = studies.live_run(results, LIVE, LIVE_STEPS, model, seed=SEED)  # the study's own training code

# %% tags=["nbval-ignore-output"]
fig, ax = plt.subplots(figsize=(6, 3.2))
plot_live(ax, results, LIVE, LIVE_STEPS, live, seed=SEED, colour="C0")
plt.show()
print(f"live run: test answer loss {live:.3f} after {LIVE_STEPS} steps")

# %%
print(studies.require_inside(results, LIVE, LIVE_STEPS, live))

# %% [markdown]
# What the 100-step prompt answers (for comparison, the study's runs go on to 400 steps):

# %% tags=["nbval-ignore-output"]
for ex in qa["test"][:4]:
    got = complete(tuned, [ex.prompt], 12)[0].split("\n")[0]
    print(f"{ex.prompt.splitlines()[0]!r:45} -> {got!r:14} (truth {ex.response.strip()!r})")

# %% [markdown]
# ## Claim check
#
# Each row is one claim of the study, with the margin it declared before running: the difference of the two
# set-ups' means over five seeds each, its 95% Welch interval, and the verdict `peftlab.evidence.compare` reads
# off it (the cell recomputes every verdict from the per-seed values in the results file).

# %%
display(claim_table(results))

# %% [markdown]
# Read against the paper. The small-model end of Lester et al.'s Fig. 1 shows here too: with its own best rate and
# the same steps, full fine-tuning ends about 0.95 nats of answer loss and 54 points of exact match ahead of a
# 20-token prompt, and LoRA 0.81 nats ahead. Whether the gap closes at 11B cannot be tested on a 3.3M-parameter
# model, so the first row is a verdict about this scale only. Length matters more here than on T5: 5 tokens barely
# learn the task (0% exact match), and 50 tokens end 0.20 nats below 20, so "little gain beyond 20" does not hold at
# this size and budget. Class-label initialisation (the embeddings of four answer words) ends within the noise of
# sampled vocabulary: the interval includes zero, so the verdict is inconclusive, not "no effect".

# %% [markdown]
# ## Explore: prompt length and initialisation
#
# Pick a length, an initialisation and a number of steps, and train: each click trains a fresh soft prompt on
# the frozen base, at the learning rate the study chose, and adds its loss curve to the plot, with the held-out
# answer loss (first 64 test questions) in the legend. The logic is `VirtualTokenExplorer.run`, which returns
# plain numbers; the widget only draws them. Short runs show speed; the study above shows where each set-up ends.

# %%
explorer = VirtualTokenExplorer(model, batch_size=study.batch_size, n_eval=64)
explorer.LR = {**explorer.LR, "prompt": results["runs"]["prompt20"]["lr"]}  # the study's choice for 20 tokens
check = explorer.run("prompt", 4, "text", steps=3)
print(f"4 tokens, text init, 3 steps: {check['trainable']:,} trainable, {len(check['loss'])} losses, "
      f"held-out answer loss {check['heldout_loss']:.3f}")

# %% [markdown]
# ![The explorer below as it first appears, at its default settings](figures/06_explorer.png)
#
# *The explorer below as it first appears, photographed in JupyterLab by `scripts/explorer_pictures.py`; run
# the cell for the live one.*

# %% tags=["explorer", "nbval-ignore-output"]
explorer.show("prompt")

# %% [markdown]
# ## Takeaways for the interview
#
# - Prompt tuning learns $n \times d$ numbers in front of the input of a frozen model: a few thousand
#   parameters here, one small file per task, and tasks can share one batch on one model. For scale: T5-XXL with
#   11B parameters and 100 prompt tokens of width 4,096 keeps 11e9 / 409,600, about 27,000 times fewer
#   task-specific numbers than a fine-tuned copy.
# - Lester et al. find it matches full fine-tuning only at the largest T5 (11B) and lags far behind on small
#   models. That half of the claim cannot be tested on a 3.3M-parameter model; what can be measured here is the
#   small-model end, and the claim check above gives it with its interval.
# - Length and initialisation are claims about training at a plateau, not after a fixed short run: compare the
#   set-ups in the study's table, where each had its own learning rate and the same 400 steps.
# - The virtual tokens use context and need masks and labels padded for them; dropping their logits keeps the
#   rest of the pipeline unchanged.
#
# **Follow-up questions to expect**
# - *Prompt tuning vs prompt engineering?* Engineering picks discrete tokens by hand; tuning learns continuous
#   vectors by gradient descent, with the model frozen in both.
# - *Why is it weaker than LoRA?* It can only steer the model through attention to $n$ extra positions at the
#   input; LoRA changes weights in every layer. Prefix tuning (07) adds vectors to every layer.
# - *Which T5 did Lester et al. use, and why?* Not the released span-corruption checkpoints, which prompt-tune
#   poorly, but T5 v1.1 "LM-adapted": trained a further 100K steps on plain language modelling, so the frozen model
#   continues text instead of filling sentinel spans (§2.2; the gap shows in the pre-training ablation of Fig. 3).
#   Our base model is a plain next-token model from the start.
# - *Can you ensemble prompts?* Yes, cheaply (§6): N prompts trained on one task share one frozen model, run as
#   one batch of N copies of the input, and their majority vote beat the average single prompt in their runs.
# - *How do you serve it?* One frozen model; each request carries its task's $P$, so a batch can mix tasks.
