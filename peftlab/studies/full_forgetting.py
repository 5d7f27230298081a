"""Study 01_full (notebook 01): full fine-tuning on a new task (natural language to SQL), what it learns and
what it forgets of pre-training, at its own best learning rate and at a gentler one.

Catastrophic forgetting (McCloskey & Cohen 1989; for LLMs under fine-tuning, Luo et al. 2023, "An Empirical
Study of Catastrophic Forgetting in Large Language Models During Continual Fine-tuning", arXiv 2308.08747):
training every weight on a new task degrades what the model knew before. How much depends on the learning
rate: a smaller step moves the weights less, and learns the new task more slowly.

Declared before any run:

* new task: `data.sql_task` (624 train / 78 val / 78 test pairs, all the task has), loss on the SQL only,
  batch 16, AdamW, constant learning rate;
* old knowledge: the 480 facts of pre-training, 240 val and 240 test (`studies.fact_splits`). `fact_rank`:
  the true value has the highest log-likelihood among every value of its attribute (a fact still known);
  `fact_match`: greedy completion gives it (a fact still said). A fact ranked first but no longer completed
  is kept, its output hijacked by the new task;
* methods: "full", full fine-tuning at its own best rate, swept over six rates 1e-5 to 3e-3 (factors of
  about 3) for 100 steps with seeds 0 and 1, chosen on val SQL answer loss; the facts are measured on val
  at the end of every sweep run (forgetting over learning rates), never used for the choice; "gentle",
  full fine-tuning at 3e-5 (fixed before the run: the second-lowest rate of the grid);
* final runs: seeds 0-4 per method, 200 steps; probes at steps 0, 50, 100, 200 (SQL answer loss on val and
  test; on test also SQL exact match and both fact measures);
* claims: Welch 95% intervals over the 5 seeds (one-sample against the base model's own value, which does
  not vary by seed), margins in `STUDY.claims`.

Run time: 2,050 s (34 minutes) on 2 cores, 3,300 training steps and 40 probes of the 240 test facts (ranking
each among its 12 to 16 candidates takes about 8 s), plus 12 of the val facts in the sweep:

    python -m peftlab.studies run 01_full

The sweep chose 1e-3 for "full", inside its grid (3e-4 came within 0.002 nats of it).

>>> [m.label for m in STUDY.methods], STUDY.claims[0].b
(['full', 'gentle'], 'base')
"""

from __future__ import annotations

from . import BASE, Claim, Method, Study

STEPS = 200
FORGETTING = ("catastrophic forgetting (McCloskey & Cohen 1989); Luo et al. 2023 (arXiv 2308.08747), abstract: "
              "during continual instruction tuning \"catastrophic forgetting is generally observed in LLMs ranging "
              "from 1b to 7b parameters\"")

STUDY = Study(
    id="01_full",
    title="Full fine-tuning on NL -> SQL: the new task learned, the facts of pre-training forgotten, over "
          "learning rates",
    notebook="01_full_fine_tuning",
    methods=(
        Method("full", "full", {}, lrs=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3), steps=STEPS),
        Method("gentle", "full", {}, lrs=(3e-5,), steps=STEPS, sweep_seeds=(0,)),
    ),
    claims=(
        Claim("forgets", "full fine-tuning forgets: at its best rate for the new task, it ranks more than 5 "
              "points fewer facts of pre-training first than the base model", FORGETTING, metric="fact_rank",
              a="full", b=BASE, kind="less", margin=0.05),
        Claim("forgets_greedy", "and it completes more than 5 points fewer of them (greedy)", FORGETTING,
              metric="fact_match", a="full", b=BASE, kind="less", margin=0.05),
        Claim("gentle_forgets_less", "a gentler rate (3e-5) forgets less: more facts ranked first",
              "the learning rate sets how far the weights move (Luo et al. 2023 vary the model, not the rate; "
              "this is the rate's share)", metric="fact_rank", a="gentle", b="full", kind="greater",
              margin=0.0),
        Claim("gentle_learns_less", "and learns less of the new task in the same 200 steps: higher SQL "
              "answer loss", "the same trade-off, from the new task's side", metric="answer_loss",
              a="gentle", b="full", kind="greater", margin=0.0),
    ),
    seeds=(0, 1, 2, 3, 4),
    seeds_note="5 seeds in the final runs, 2 in the sweep; one final run takes about 100 s on 2 cores with its "
               "4 probes",
    sweep_seeds=(0, 1),
    sweep_steps=100,
    eval_every=100,
    eval_steps=(50,),
    eval_note="SQL: val 78 and test 78 pairs, all the task has (the sweep and the plateau on val); facts: 240 "
              "val (end of every sweep run) and 240 test (curves and claims), of 480",
    task="sql_task",
    finals=("answer_loss", "exact_match", "fact_rank", "fact_match"),
    curve_metrics=("exact_match", "fact_rank", "fact_match"),
    curve_splits=("test",),
    sweep_metrics=("fact_rank", "fact_match"),
)
