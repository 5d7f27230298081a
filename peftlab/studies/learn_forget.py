"""Study 08_forgetting (notebook 08): does LoRA forget less than full fine-tuning, and what does it cost in
learning? Learning and forgetting measured on the same runs, over training and over learning rates.

Biderman et al. 2024 ("LoRA Learns Less and Forgets Less", arXiv 2405.09673): on code and math, LoRA learns
less of the new domain than full fine-tuning (§4.1) and forgets less of the source domain (§4.2); plotted as
forgetting against learning over training durations, the two "seem to occupy the same Pareto curve" (§4.3,
Fig. 4), LoRA at the learn-less, forget-less end.

Declared before any run:

* new domain: `data.dna_task`, genes built from motifs, each followed by its reverse complement; trained on
  whole sequences (next-token loss on every byte), batch 8. Learning is measured as `rc_loss`, the loss on
  the reverse complement only: it is fully predictable from the gene, and below ln 4 = 1.386 nats a model
  knows more than the four-letter alphabet;
* old knowledge: the 480 facts of pre-training ("Tevel lives in" -> " Ostrel"), 240 for val and 240 for
  test (`studies.fact_splits`). `fact_rank`: the true value has the highest log-likelihood among every value
  of its attribute (12 to 16 candidates, chance about 7%); it tells a fact lost from a fact the model keeps
  but no longer says first because its output is hijacked by DNA letters. `fact_match`: greedy completion
  gives the value (what the notebook measured before);
* methods: full fine-tuning, and LoRA r = 8 on every linear layer with alpha = 2r (Biderman et al.'s
  setting);
* learning rates: full 1e-5 to 1e-3, LoRA 1e-4 to 1e-2, five each by factors of about 3 (both reach down to
  1e-4, the gentle end); swept 100 steps with seeds 0 and 1, chosen on val `rc_loss`; the facts are measured
  at the end of every sweep run too (the trade-off over learning rates), never used for the choice;
* final runs: seeds 0-4 at each method's chosen rate, 200 steps; probes at steps 0, 2, 4, 6, 8, 12, 16, 24,
  32, 50, 100, 150 and 200 (forgetting is fast: the first probes are dense);
* evaluation: val 244 genes for the sweep, the plateau and the matched level; test 244 genes and the 240 test
  facts for the curves and the claims;
* claims: the final values at each method's own rate, and the facts kept where each run's val `rc_loss`
  first reaches 1.0 and 0.5 nats (`on="matched"`), Welch 95% intervals, margins in `STUDY.claims`.

Run time: 3,166 s (53 minutes) on 2 cores, over the 30-minute aim: 4,000 training steps at about 0.2 s, and 130
probes of the facts (240 test facts ranked among their 12 to 16 candidates: about 3,400 scored continuations each),
which take most of the time; part of the run shared the cores with notebook builds:

    python -m peftlab.studies run 08_forgetting

>>> [m.label for m in STUDY.methods]
['full', 'lora']
"""

from __future__ import annotations

from . import Claim, Method, Study

STEPS = 200
LEVELS = (1.0, 0.5)  # nats of val rc_loss at which the facts kept are compared
BIDERMAN = "Biderman et al. 2024 (arXiv 2405.09673)"

STUDY = Study(
    id="08_forgetting",
    title="Learning vs forgetting: full fine-tuning and LoRA on a new domain (DNA), with the facts of pre-training",
    notebook="08_catastrophic_forgetting",
    methods=(
        Method("full", "full", {}, lrs=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3), steps=STEPS),
        Method("lora", "lora", {"r": 8, "alpha": 16, "targets": "all-linear"}, lrs=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
               steps=STEPS),
    ),
    claims=(
        Claim("learns_less", "LoRA learns less of the new domain: at each one's own best rate, its "
              "reverse-complement loss ends higher", f"{BIDERMAN}, §4.1: LoRA underperforms full fine-tuning "
              "on the target domain", metric="rc_loss", a="lora", b="full", kind="greater", margin=0.0),
        Claim("forgets_less", "LoRA forgets less: at each one's own best rate, it ends with more facts "
              "ranked first", f"{BIDERMAN}, §4.2: LoRA forgets less of the source domain",
              metric="fact_rank", a="lora", b="full", kind="greater", margin=0.0),
        Claim("same_curve_at_1", "at the same new-domain loss (val 1.0 nats), LoRA and full fine-tuning keep "
              "the same facts, within 10 points", f"{BIDERMAN}, §4.3, Fig. 4: the two \"seem to occupy the same "
              "Pareto curve\"", metric="fact_rank", a="lora", b="full", kind="equivalent", margin=0.10,
              on="matched", success=LEVELS[0]),
        Claim("same_curve_at_05", "at the same new-domain loss (val 0.5 nats), LoRA and full fine-tuning keep "
              "the same facts, within 10 points", f"{BIDERMAN}, §4.3, Fig. 4", metric="fact_rank", a="lora",
              b="full", kind="equivalent", margin=0.10, on="matched", success=LEVELS[1]),
    ),
    seeds=(0, 1, 2, 3, 4),
    seeds_note="5 seeds in the final runs, 2 in the sweep; one final run takes about 80 s on 2 cores with its "
               "13 probes",
    sweep_seeds=(0, 1),
    sweep_steps=100,
    eval_every=50,
    eval_steps=(2, 4, 6, 8, 12, 16, 24, 32),
    eval_note="val 244 genes for the sweep, the plateau and the matched levels; test 244 genes and 240 test facts "
              "(of 480) for the curves and the claims; 240 val facts at the end of every sweep run",
    batch_size=8,
    task="dna_task",
    base="tiny",
    metric="rc_loss",
    finals=("rc_loss", "fact_rank", "fact_match"),
    curve_metrics=("fact_rank", "fact_match"),
    curve_splits=("test",),
    sweep_metrics=("fact_rank", "fact_match"),
)
