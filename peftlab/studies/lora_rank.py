"""Study 11_rank (notebook 11): LoRA's rank, its scaling rule and its target layers on held-out Q/A, every
set-up at its own best learning rate from one wide grid, five seeds each.

Hu et al. 2021 (arXiv 2106.09685), Table 6: on GPT-3 175B with W_q and W_v adapted, WikiSQL 73.4 / 73.3 /
73.7 / 73.8 / 73.5 for r = 1 / 2 / 4 / 8 / 64, so a small rank suffices there. Kalajdzievski 2023 (rsLoRA,
arXiv 2312.03732): with gamma_r = alpha / r the update shrinks as r grows and larger ranks learn no
better; with alpha / sqrt(r) they do. Dettmers et al. 2023 (QLoRA, arXiv 2305.14314): which layers are
adapted matters more than r.

Declared before any run:

* methods, each trained for 300 steps at batch 16, AdamW, constant learning rate, alpha = 16 throughout:
  LoRA on q_proj and v_proj at r = 1, 8, 64 with gamma = alpha / r; at r = 8 and 64 with gamma =
  alpha / sqrt(r) (rsLoRA; at r = 1 the two rules are the same run); and r = 1 on all linear layers
  (alpha / r);
* learning rates: the same six for every set-up, 3e-4 to 0.1 by factors of about 3, wide enough that a
  rule's larger or smaller gamma can be matched by the learning rate (so each rank is judged at its own
  best rate, not at a shared one that favours one scale); swept for 100 steps with seed 0, scored by
  answer loss on the validation split (48 questions);
* final runs: seeds 0-4 at the chosen rate; answer loss on val and test every 50 steps;
* budget rule: 300 steps for every set-up; the plateau is reported;
* evaluation: the Q/A test split, 192 questions (48 held-out people x 4 facts), all the task has;
* claims: Welch 95% intervals over the 5 seeds of each side, margins in nats in `STUDY.claims`.

Run time: about 24 minutes on 2 idle cores (a LoRA step at batch 16 takes about 100 ms):

    python -m peftlab.studies run 11_rank

>>> [m.label for m in STUDY.methods]
['qv1', 'qv8', 'qv64', 'qv8_rs', 'qv64_rs', 'all1']
"""

from __future__ import annotations

from . import QA_EVAL_NOTE, Claim, Method, Study

STEPS = 300
LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
QV = ("q_proj", "v_proj")
TABLE6 = ("Hu et al. 2021 (arXiv 2106.09685), Table 6: GPT-3 175B, W_q + W_v, WikiSQL 73.4 / 73.3 / 73.7 / "
          "73.8 / 73.5 at r = 1 / 2 / 4 / 8 / 64")
RSLORA = ("Kalajdzievski 2023 (rsLoRA, arXiv 2312.03732), Fig. 1-2: with alpha / sqrt(r) larger ranks reach a "
          "lower loss; with alpha / r they do not")


def lora(r: int, targets=QV, rslora: bool = False) -> dict:
    return {"r": r, "alpha": 16, "targets": targets, "rslora": rslora}


STUDY = Study(
    id="11_rank",
    title="LoRA rank x scaling rule (alpha/r, alpha/sqrt(r)) x targets, each at its own learning rate, held-out Q/A",
    notebook="11_choosing_lora_rank",
    methods=(
        Method("qv1", "lora", lora(1), lrs=LRS, steps=STEPS),
        Method("qv8", "lora", lora(8), lrs=LRS, steps=STEPS),
        Method("qv64", "lora", lora(64), lrs=LRS, steps=STEPS),
        Method("qv8_rs", "lora", lora(8, rslora=True), lrs=LRS, steps=STEPS),
        Method("qv64_rs", "lora", lora(64, rslora=True), lrs=LRS, steps=STEPS),
        Method("all1", "lora", lora(1, "all-linear"), lrs=LRS, steps=STEPS),
    ),
    claims=(
        Claim("r1_enough", "a tiny rank is enough: r=1 and r=8 (q, v) agree within 0.05 nats", TABLE6,
              metric="answer_loss", a="qv1", b="qv8", kind="equivalent", margin=0.05),
        Claim("r8_enough", "r=8 is enough: r=8 and r=64 (q, v, alpha / r) agree within 0.05 nats", TABLE6,
              metric="answer_loss", a="qv8", b="qv64", kind="equivalent", margin=0.05),
        Claim("r8_enough_rs", "r=8 is enough under alpha / sqrt(r) too: r=8 and r=64 agree within 0.05 nats",
              RSLORA, metric="answer_loss", a="qv8_rs", b="qv64_rs", kind="equivalent", margin=0.05),
        Claim("rs_beats_standard_r64", "at r=64, alpha / sqrt(r) beats alpha / r even when each has its own "
              "best learning rate (more than a larger step size)", RSLORA, metric="answer_loss", a="qv64_rs",
              b="qv64", kind="less", margin=0.0),
        Claim("targets_beat_rank", "adapting every linear layer at r=1 beats q, v at r=64",
              "Dettmers et al. 2023 (QLoRA, arXiv 2305.14314), §4 and Fig. 2: LoRA on all linear layers is "
              "what matters, r matters little", metric="answer_loss", a="all1", b="qv64", kind="less",
              margin=0.0),
    ),
    seeds=(0, 1, 2, 3, 4),
    seeds_note="5 seeds; one final run takes about 35 s on 2 cores with its evaluations",
    sweep_seeds=(0,),
    sweep_steps=100,
    eval_every=50,
    eval_note=QA_EVAL_NOTE,
    batch_size=16,
    task="qa_task",
    base="tiny",
)
