# %% [markdown]
# # 02 · What is parameter-efficient fine-tuning (PEFT)?
#
# **The interview question.** *"What is PEFT, why use it, and what are the main methods?"*
#
# **The short answer an interviewer expects**
# - Freeze (almost) all of the pretrained model and train a small number of new or selected parameters.
# - Far less memory (no gradients or optimizer state for the frozen weights), tiny checkpoints per task, one base
#   model shared by many tasks, and often quality close to full fine-tuning.
# - Main families: adapters (bottleneck layers), low-rank updates (LoRA, QLoRA), soft prompts (prompt tuning,
#   prefix tuning, P-tuning).
#
# ## The precise answer
#
# Every method here keeps the pretrained weights $\theta_0$ frozen and trains a small $\phi$, with the same
# training loop and loss; they differ in *where* $\phi$ acts:
#
# | family | method | what trains | trainable parameters |
# |---|---|---|---|
# | none | full fine-tuning | all of $\theta$ | $N$ |
# | low-rank | LoRA (Hu et al. 2021, arXiv 2106.09685) | $B A$ added to chosen weight matrices | $r(d + k)$ per matrix |
# | low-rank | QLoRA (Dettmers et al. 2023, arXiv 2305.14314) | LoRA on a 4-bit NF4 base | as LoRA; base at ~4.1 bits/param |
# | adapters | bottleneck adapters (Houlsby et al. 2019, arXiv 1902.00751) | small MLPs after sublayers | $2dm + m + d$ per adapter |
# | soft prompts | prompt tuning (Lester et al. 2021, arXiv 2104.08691) | $n$ input vectors | $n d$ |
# | soft prompts | prefix tuning (Li & Liang 2021, arXiv 2101.00190) | keys and values in every layer | $2 L P d$ kept (an MLP while training) |
# | soft prompts | P-tuning (Liu et al. 2021, arXiv 2103.10385) | an encoder that produces the prompt | encoder while training; $n d$ kept |
#
# What the short answer leaves out: "small" has two meanings, what trains and what is stored per task, and
# they differ for the reparametrized prompt methods; memory savings cover gradients and optimizer state but not
# activations, which every method still pays for; and "close to full fine-tuning" was shown at scale. The LoRA
# paper's headline: on GPT-3 175B, 4.7M trainable parameters matched or beat full fine-tuning (WikiSQL 73.4 vs
# 73.8, MNLI 91.7 vs 89.5). On a 3.3M-parameter model the methods spread out, as measured below.

# %%
import matplotlib.pyplot as plt
import torch

from peftlab import count_parameters, data, exact_match, load_base, memory_report, methods, prefix, prompt
from peftlab.measure import time_step, train_step_fn
from peftlab.explore.plots import CATEGORIES, stacked_bars
from peftlab.explore.report import claim_check, mib, table
from peftlab.tokenizer import ByteTokenizer
from peftlab.evaluate import evaluate_loss
from peftlab.train import collate, train

torch.manual_seed(0)
GPU = torch.cuda.is_available()
device = "cuda" if GPU else "cpu"
STEPS, BATCH, N_EVAL = (300, 16, 192) if GPU else (40, 8, 64)  # larger where a GPU is present

model = load_base(device=device)
qa = data.qa_task()
test = qa["test"][:N_EVAL]
N = count_parameters(model).total
cfg = model.config
print(f"base model: {N:,} parameters; Q/A task: {len(qa['train'])} train, {len(test)} held-out examples")

# %% [markdown]
# ## Every method, one task
#
# The task of notebooks 03 and 06: questions about people the model read about in pre-training; train on half of
# the people, test on the other half. Each method gets a fresh copy of the base model, the same steps, batch
# and data, at a learning rate that suits it. `stored` is what has to be kept per task after training (the
# prefix MLP and the P-tuning encoder are folded away).


# %%
METHODS = {  # name -> (peftlab.methods builder and its options, learning rate, parameters stored per task)
    "full fine-tuning": (("full", {}), 3e-4, N),
    "LoRA r=8 (q, v)": (("lora", {"r": 8, "alpha": 16}), 3e-3, None),
    "QLoRA r=8 (q, v), NF4": (("qlora", {"r": 8, "alpha": 16}), 3e-3, None),
    "adapters m=16 (MLP)": (("adapters", {"bottleneck": 16}), 1e-2, None),
    "prompt tuning n=20": (("prompt", {"n_tokens": 20, "init": "vocab"}), 0.1, prompt.num_parameters(20, cfg.d_model)),
    "prefix tuning P=10 (MLP)": (("prefix", {"n_tokens": 10}), 3e-3, prefix.num_parameters(10, cfg.d_model, cfg.n_layers)),
    "P-tuning n=20 (LSTM)": (("ptuning", {"n_tokens": 20, "encoder": "lstm"}), 1e-2, prompt.num_parameters(20, cfg.d_model)),
}
batch_ids, batch_labels = collate(qa["train"][:BATCH], ByteTokenizer())


def run_method(name: str, steps: int) -> dict:
    """Train a fresh copy with method `name`; what trains and is stored, one step's memory, held-out quality."""
    (method, options), lr, stored = METHODS[name]
    torch.manual_seed(0)
    mem = memory_report(methods.prepare(model, method, **options), batch_ids, labels=batch_labels)  # its own copy
    torch.manual_seed(0)
    m = methods.prepare(model, method, **options)
    trainable = count_parameters(m).trainable
    hist = train(m, qa["train"], steps=steps, lr=lr, batch_size=BATCH, progress=False)
    return {"trainable": trainable, "stored": stored or trainable, "memory": mem.as_dict(), "loss": hist.loss,
            "heldout_loss": evaluate_loss(m, test, loss_on="response"), "accuracy": exact_match(m, test), "model": m}


results = {name: run_method(name, STEPS) for name in METHODS}
display(table([(name, f"{r['trainable']:,}", f"{100 * r['trainable'] / N:.2f}%", f"{r['stored']:,}",
                mib(r["memory"]["total"]), f"{r['heldout_loss']:.3f}", f"{r['accuracy']:.1%}")
               for name, r in results.items()],
              ["method", "trainable", "% of base", "stored per task", "memory, one step", "held-out answer loss",
               "held-out exact match"]))

# %% [markdown]
# ## Memory by category
#
# One real training step of each method on the same batch, counted from the tensors (`memory_report`): the frozen
# base still costs its weights (4-bit for QLoRA, with its quantization constants), but gradients and Adam's two
# moments exist only for what trains. Activations shrink far less: the backward pass still runs through every layer
# above the first trainable parameter (for soft prompts, down to the input), and only the inputs that frozen weights
# would need for their own gradients are no longer kept; the prompt methods also make the sequence longer.

# %%
display(table([(name, *(mib(r["memory"][c]) for c in CATEGORIES), mib(r["memory"]["total"]))
               for name, r in results.items()], ["method", *CATEGORIES, "total"]))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4))
stacked_bars(ax1, [r["memory"] for r in results.values()], [n.split(" ")[0] for n in results])
ax1.set_title(f"One training step, batch {BATCH}, measured")
ax1.tick_params(axis="x", labelrotation=30)
for name, r in results.items():
    ax2.scatter(r["trainable"], 100 * r["accuracy"], s=40)
    ax2.annotate(name.split(" ")[0], (r["trainable"], 100 * r["accuracy"]), fontsize=8,
                 xytext=(4, 4), textcoords="offset points")
ax2.set_xscale("log")
ax2.set(xlabel="trainable parameters (log)", ylabel="held-out exact match (%)",
        title=f"Quality after {STEPS} steps vs what trains")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Step time
#
# The median of a few training steps on the same batch (after warm-up). On a 3.3M-parameter model on a CPU, the
# frozen base's forward and backward dominate for every method, and the 4-bit base pays for dequantizing its
# weights in every step; the times and ratios change from run to run, so this cell is not compared by nbval.

# %% tags=["nbval-ignore-output"]
times = {name: time_step(train_step_fn(r["model"], batch_ids), warmup=1, repeats=3) for name, r in results.items()}
display(table([(name, f"{t * 1e3:.1f} ms", f"{t / times['full fine-tuning']:.2f}x") for name, t in times.items()],
              ["method", "step time", "vs full fine-tuning"]))

# %% [markdown]
# ## Claim check

# %%
full, lo = results["full fine-tuning"], results["LoRA r=8 (q, v)"]
best_peft = max((r["accuracy"], name) for name, r in results.items() if name != "full fine-tuning")
prompt_methods = [n for n in results if "prompt" in n or "prefix" in n or "P-tuning" in n]
states = {name: r["memory"]["gradients"] + r["memory"]["optimizer"] for name, r in results.items()}
saved = states["full fine-tuning"] - states["LoRA r=8 (q, v)"]
display(claim_check([
    ("train a tiny fraction of the parameters", "LoRA on GPT-3 175B: 4.7M trainable (0.003%)",
     f"here: LoRA {100 * lo['trainable'] / N:.2f}%, prompt tuning "
     f"{100 * results['prompt tuning n=20']['trainable'] / N:.2f}%",
     lo["trainable"] < 0.05 * N),
    ("much less memory", "no gradients or optimizer state for frozen weights",
     f"LoRA saves {mib(saved)} of gradients + optimizer vs full FT; activations "
     f"{mib(lo['memory']['activations'])} vs {mib(full['memory']['activations'])}",
     states["LoRA r=8 (q, v)"] < 0.05 * states["full fine-tuning"]),
    ("quality comparable to full fine-tuning", "GPT-3 175B: WikiSQL 73.4 vs 73.8, MNLI 91.7 vs 89.5 (LoRA vs full)",
     f"exact match: full FT {full['accuracy']:.1%}, best PEFT ({best_peft[1]}) {best_peft[0]:.1%}",
     "holds" if best_peft[0] >= full["accuracy"] - 0.01
     else f"partly: the best PEFT method is {100 * (full['accuracy'] - best_peft[0]):.1f} points behind"
     if best_peft[0] >= full["accuracy"] - 0.1 else "does not hold here"),
    ("every PEFT method is about as good", "soft prompts match only at large scale (Lester et al.)",
     "prompt methods: " + ", ".join(f"{results[n]['accuracy']:.0%}" for n in prompt_methods),
     "no: they spread widely here"
     if max(results[n]["accuracy"] for n in prompt_methods) - min(results[n]["accuracy"] for n in prompt_methods) > 0.2
     else "they end close here"),
]))

# %% [markdown]
# ## Explore: one method at a time
#
# Pick a method and a number of steps: a fresh copy trains and the panel reports what trained, the memory of one
# step and the held-out answers. The logic is `run_method` (above), which returns plain numbers; the widget only
# shows them.

# %%
check = run_method("prompt tuning n=20", 2)
print(f"prompt tuning, 2 steps: {check['trainable']:,} trainable, one step {mib(check['memory']['total'])}, "
      f"held-out answer loss {check['heldout_loss']:.3f}")

# %% tags=["nbval-skip"]
import ipywidgets as W


def show(name, steps):
    r = run_method(name, steps)
    print(f"{name}: {r['trainable']:,} trainable ({100 * r['trainable'] / N:.2f}%), {r['stored']:,} stored, "
          f"one step {mib(r['memory']['total'])}; held-out answer loss {r['heldout_loss']:.3f}, "
          f"exact match {r['accuracy']:.0%}")


W.interact_manual(show, name=W.Dropdown(options=list(METHODS), description="method"),
                  steps=W.SelectionSlider(options=[10, 40, 100, 200], value=40, description="steps"));

# %% [markdown]
# ## Takeaways for the interview
#
# - PEFT freezes the base and trains a small $\phi$: low-rank updates (LoRA, QLoRA), adapters, or soft prompts.
#   Say what trains *and* what is stored: the reparametrized prompt methods train far more than they keep.
# - Memory: gradients and optimizer state shrink to the size of $\phi$; the frozen weights stay (4-bit with QLoRA);
#   activations shrink far less, and soft prompts add positions.
# - Quality: at GPT-3 scale LoRA matched full fine-tuning; on this small model after a short run, the low-rank
#   and adapter methods come much closer to it than the soft prompts, which need scale (table above).
#
# **Follow-up questions to expect**
# - *Which one would you use?* LoRA (or QLoRA when memory is tight) as the default; adapters where the serving
#   stack has them; soft prompts when many tasks must share one frozen model in one batch.
# - *Does PEFT train faster?* Fewer optimizer updates, but the same forward and backward through the base: on a
#   small model the step time changes far less than the trainable parameter count (cell above); the win is memory.
# - *What about forgetting?* The base is untouched, so removing the adapter restores it; with the adapter on,
#   forgetting is smaller but not zero (notebook 08).
