"""Study 20_full (notebook 20): full fine-tuning against LoRA on a domain absent from pre-training, DNA-like
genes (`data.dna_task`), every method at its own learning rate and the same steps, five seeds each.

Biderman et al. 2024 ("LoRA Learns Less and Forgets Less", arXiv 2405.09673): on Llama-2-7B, LoRA trails
full fine-tuning most in continued pre-training on code, far from the base model's data; a higher rank and
all linear layers close part of the gap, not all of it. Hu et al. 2021 (arXiv 2106.09685) §7.2 raise the
same case in words: a small r may not do for a downstream task in a language absent from pre-training.

Declared before any run:

* methods, each trained for 300 steps at batch 8 (equal steps; 2,400 of the 1,954 training genes, 1.2
  epochs), AdamW, constant learning rate: full fine-tuning; LoRA r=8 on q_proj and v_proj; LoRA r=8 and
  r=64 on all linear layers; LoRA r=64 on all linear layers with the embeddings and the output head also
  trained in full (PEFT's `modules_to_save`). alpha = 2r throughout (Biderman et al.'s choice), so the
  update's scale alpha/r = 2 is the same at every rank;
* learning rates: three per method, a factor of about 3 apart, around the rates the earlier notebook's
  sweep picked (full 1e-3, LoRA q,v r=8 1e-2, all-linear r=8 3e-3, r=64 1e-3); swept for 100 steps with
  seed 0, scored by the loss on the validation genes;
* final runs: seeds 0-4 at the chosen rate; loss on val and test every 50 steps;
* budget rule: 300 steps for every method; the plateau is reported;
* evaluation: mean loss per byte over whole sequences (gene, bar, reverse complement) on the 244 test
  genes, all the task holds out;
* claims: Welch 95% intervals over the 5 seeds of each side, margins in nats per byte in `STUDY.claims`.

Run time: about 22 minutes on 2 idle cores:

    python -m peftlab.studies run 20_full

>>> [m.label for m in STUDY.methods]
['full', 'qv8', 'all8', 'all64', 'all64_embed']
"""

from __future__ import annotations

from . import Claim, Method, Study

STEPS = 300
ALL = "all-linear"
BIDERMAN = ("Biderman et al. 2024 (arXiv 2405.09673), Fig. 2 and §4: in continued pre-training on code LoRA "
            "trails full fine-tuning; higher ranks close part of the gap")


def lora(r: int, targets, **more) -> dict:
    return {"r": r, "alpha": 2 * r, "targets": targets, **more}


STUDY = Study(
    id="20_full",
    title="Full fine-tuning vs LoRA (rank, targets, trainable embeddings) on a domain absent from pre-training",
    notebook="20_when_full_fine_tuning",
    methods=(
        Method("full", "full", {}, lrs=(3e-4, 1e-3, 3e-3), steps=STEPS),
        Method("qv8", "lora", lora(8, ("q_proj", "v_proj")), lrs=(3e-3, 1e-2, 3e-2), steps=STEPS),
        Method("all8", "lora", lora(8, ALL), lrs=(1e-3, 3e-3, 1e-2), steps=STEPS),
        Method("all64", "lora", lora(64, ALL), lrs=(3e-4, 1e-3, 3e-3), steps=STEPS),
        Method("all64_embed", "lora", lora(64, ALL, modules_to_save=("embed_tokens", "lm_head")),
               lrs=(3e-4, 1e-3, 3e-3), steps=STEPS),
    ),
    claims=(
        Claim("full_beats_qv8", "on a new domain full fine-tuning is well ahead of LoRA on q, v: test loss "
              "lower by more than 0.05 nats per byte", BIDERMAN, metric="loss", a="full", b="qv8", kind="less",
              margin=0.05),
        Claim("targets_help", "adapting every linear layer beats adapting q, v at the same rank (r=8)",
              "Dettmers et al. 2023 (QLoRA, arXiv 2305.14314), §4 and Fig. 2: LoRA on all linear layers is "
              "what matches full fine-tuning; Biderman et al. 2024 likewise target all modules",
              metric="loss", a="all8", b="qv8", kind="less", margin=0.0),
        Claim("rank_helps", "a higher rank helps on a new domain: r=64 below r=8 (all linear layers)", BIDERMAN,
              metric="loss", a="all64", b="all8", kind="less", margin=0.0),
        Claim("all64_closes_gap", "LoRA r=64 on all linear layers comes within 0.05 nats per byte of full "
              "fine-tuning", BIDERMAN, metric="loss", a="all64", b="full", kind="equivalent", margin=0.05),
        Claim("embeddings_help", "training the embeddings and the head too (modules_to_save) lowers LoRA's "
              "loss on the new domain",
              "Hu et al. 2021 (arXiv 2106.09685), §7.2: a new language may need more than a small r; PEFT's "
              "modules_to_save is the usual remedy for new tokens", metric="loss", a="all64_embed", b="all64",
              kind="less", margin=0.0),
    ),
    seeds=(0, 1, 2, 3, 4),
    seeds_note="5 seeds; one final run takes 30-60 s on 2 cores with its evaluations",
    sweep_seeds=(0,),
    sweep_steps=100,
    eval_every=50,
    eval_note="val 244 genes for the sweep and the plateau; test 244 genes for the curves and the claims",
    metric="loss",
    finals=("loss",),
    batch_size=8,
    task="dna_task",
    base="tiny",
)
