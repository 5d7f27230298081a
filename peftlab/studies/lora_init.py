"""Study 03_init (notebook 03): which LoRA factor starts at zero, across learning rates, and LoRA against full
fine-tuning at the same budget, held-out Q/A.

Hayou, Ghosh & Yu 2024 ("The Impact of Initialization on LoRA Finetuning Dynamics", arXiv 2406.08447),
abstract and §4 (RoBERTa-large on GLUE and Llama across learning rates, Init[A] against Init[B]): the two
ways to start from B A = 0 are not equivalent; B = 0 with A random (Init[A], the paper's and PEFT's default)
"allows the use of larger learning rates (without causing output instability) compared to the second
initialization", and on average performs better. Hu et al. 2021 (arXiv 2106.09685), §5 and Tables 2-4:
LoRA performs on par with or better than full fine-tuning.

Declared before any run:

* methods, each trained for 300 steps at batch 16, AdamW, constant learning rate:
  - "b_zero": LoRA r=8, alpha 16, on q_proj and v_proj, A Kaiming-uniform and B = 0 (`lora.add`'s default);
  - "a_zero": the same with A = 0 and B Kaiming-uniform, drawn as nn.Linear draws a weight of B's shape
    (`lora.add(init="mirror")`);
  - "full": full fine-tuning, the same steps and batch (equal steps; its learning rates are its own);
* learning rates: the two LoRAs share eight, 3e-5 to 0.1 by factors of about 3, swept for 100 steps with five
  seeds each (the stability claim counts, per seed, the rates that train); full fine-tuning sweeps four,
  3e-5 to 1e-3, with seed 0; choice by validation answer loss (48 questions);
* a rate "trains" when the validation answer loss after the sweep's 100 steps is at or below 1.0 nats (the
  success level is declared here, before the run; the base model starts at 5.55 nats on validation);
* final runs: seeds 0-4 at the chosen rate; answer loss on val and test every 50 steps;
* evaluation: the Q/A test split, 192 questions (48 held-out people x 4 facts), all the task has;
* claims: Welch 95% intervals over the 5 seeds of each side (paired by sweep seed for the stability claim),
  margins in `STUDY.claims`.

Run time: 1,408 s (23 minutes) on 2 idle cores, 12,900 training steps:

    python -m peftlab.studies run 03_init

Both LoRA initialisations chose 3e-3 and full fine-tuning 1e-4, each inside its grid.

>>> [m.label for m in STUDY.methods], STUDY.claims[0].on
(['b_zero', 'a_zero', 'full'], 'sweep_width')
"""

from __future__ import annotations

from . import QA_EVAL_NOTE, Claim, Method, Study

STEPS = 300
LRS = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
SUCCESS = 1.0  # nats of validation answer loss after the sweep's 100 steps: the rate trains
LORA = {"r": 8, "alpha": 16, "targets": ("q_proj", "v_proj")}
HAYOU = ("Hayou, Ghosh & Yu 2024 (arXiv 2406.08447), abstract and §4: B = 0 with A random allows larger "
         "learning rates without output instability than A = 0 with B random, and performs better on average")
HU = "Hu et al. 2021 (arXiv 2106.09685), §5, Tables 2-4: LoRA performs on par with or better than fine-tuning"

STUDY = Study(
    id="03_init",
    title="LoRA init B = 0 vs A = 0 across learning rates, and LoRA vs full fine-tuning at 300 steps, held-out Q/A",
    notebook="03_lora",
    methods=(
        Method("b_zero", "lora", LORA, lrs=LRS, steps=STEPS),
        Method("a_zero", "lora", {**LORA, "init": "mirror"}, lrs=LRS, steps=STEPS),
        Method("full", "full", {}, lrs=(3e-5, 1e-4, 3e-4, 1e-3), steps=STEPS, sweep_seeds=(0,)),
    ),
    claims=(
        Claim("b_zero_wider", "B = 0 trains at more of the learning rates than A = 0 (the larger stable rates)",
              HAYOU, metric="answer_loss", a="b_zero", b="a_zero", kind="greater", margin=0.0, paired=True,
              on="sweep_width", success=SUCCESS),
        Claim("b_zero_lower", "each at its own best rate, B = 0 ends below A = 0 (answer loss)", HAYOU,
              metric="answer_loss", a="b_zero", b="a_zero", kind="less", margin=0.0),
        Claim("lora_matches_full", "LoRA r=8 on q, v matches full fine-tuning at the same 300 steps: held-out "
              "answer loss within 0.05 nats", HU, metric="answer_loss", a="b_zero", b="full", kind="equivalent",
              margin=0.05),
    ),
    seeds=(0, 1, 2, 3, 4),
    seeds_note="5 seeds; one final LoRA run takes about 40 s on 2 cores with its evaluations",
    sweep_seeds=(0, 1, 2, 3, 4),
    sweep_steps=100,
    eval_every=50,
    eval_note=QA_EVAL_NOTE,
)
