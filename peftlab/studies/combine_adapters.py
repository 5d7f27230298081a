"""Study 12_combine (notebook 12): two LoRA adapters, SQL and Python, joined into one model in every way PEFT
offers, against each task's own adapter and against one adapter trained on both tasks at once.

Hu et al. 2021 (arXiv 2106.09685): LoRA adapters for many tasks share one frozen base. Merging them into one
model applies every task's update to every input: the tasks interfere. Task arithmetic (Ilharco et al. 2023,
"Editing Models with Task Arithmetic", arXiv 2212.04089): adding task vectors builds a multi-task model, and
negating one lowers that task while leaving control tasks nearly unchanged. TIES-Merging (Yadav et al. 2023,
arXiv 2306.01708) trims small entries, elects a sign per entry and averages the agreeing ones, to reduce that
interference; DARE (Yu et al. 2023, arXiv 2311.03099) drops most delta entries at random and rescales the rest
with little loss.

Declared before any run:

* base `tiny`; adapters LoRA r = 8, alpha 16 on every linear layer of the blocks ("all-linear"), batch 16, AdamW,
  constant rate:
  - "sql": trained on `data.sql_task` (624 pairs), 200 steps;
  - "python": trained on `data.python_task` (176 pairs), 200 steps;
  - "mixture": one adapter trained on both (`data.sql_python_task`: the SQL pairs and the Python pairs four
    times, equal weight), 400 steps: the steps of the two adapters together (equal compute). It separates
    interference from the confound of two adapters that each learned "answer in my format";
* learning rates: each sweeps 1e-3 to 3e-2 (four rates) for 100 steps with seed 0, chosen on the val answer loss
  of its own training task;
* combos, built per seed from that seed's "sql" and "python" adapters (`Combo`): the base model itself; cat
  (1, 1), the exact sum of the updates (task arithmetic's addition); cat (0.5, 0.5); linear (0.5, 0.5); svd
  (1, 1) at rank 8; PEFT's ties_svd and dare_linear_svd (1, 1) at rank 16 and density 0.5 (the variants that
  act on each layer's Delta W; the plain ties/dare act on A and B separately), and plain ties (1, 1) at density
  0.5; task negation: cat with the Python adapter at weight -1 and nothing else;
* a weight sweep: cat, linear and svd (rank 8) at weights (1 - t, t) over ("sql", "python"), t = 0, 0.25, 0.5,
  0.75, 1, per seed;
* evaluation, on every model: SQL answer loss (78 test pairs), Python answer loss (261: the 21 test pairs and
  `data.python_heldout`, 240 more), their mean (`pair_loss`), and the 240 test facts of pre-training completed
  greedily (a control for negation);
* final runs: seeds 0-4, own-task val and test answer loss at steps 0, 50, 100, 200 (and 300, 400 for the
  mixture); claims: Welch 95% intervals over the 5 seeds, margins in `STUDY.claims`.

Run time: 2,238 s (37 min) on 2 cores, with about 4 minutes of unit tests running next to it:

    python -m peftlab.studies run 12_combine

>>> [m.label for m in STUDY.methods], len(STUDY.combos)
(['sql', 'python', 'mixture'], 10)
"""

from __future__ import annotations

from . import Claim, Combo, Method, Study

LORA = {"r": 8, "alpha": 16, "targets": "all-linear"}
LRS = (1e-3, 3e-3, 1e-2, 3e-2)
BOTH = {"sql": 1.0, "python": 1.0}
HALF = {"sql": 0.5, "python": 0.5}
ILHARCO = "Ilharco et al. 2023 (task arithmetic, arXiv 2212.04089)"

STUDY = Study(
    id="12_combine",
    title="Combining a SQL and a Python LoRA adapter: cat, linear, svd, TIES, DARE, negation, and one adapter on both",
    notebook="12_combining_lora_adapters",
    methods=(
        Method("sql", "lora", LORA, lrs=LRS, steps=200, task="sql_task"),
        Method("python", "lora", LORA, lrs=LRS, steps=200, task="python_task"),
        Method("mixture", "lora", LORA, lrs=LRS, steps=400, task="sql_python_task"),
    ),
    combos=(
        Combo("base_model", "base"),
        Combo("cat_1_1", "cat", BOTH),
        Combo("cat_half", "cat", HALF),
        Combo("linear_half", "linear", HALF),
        Combo("svd_1_1_r8", "svd", BOTH, rank=8),
        Combo("ties", "ties", BOTH, density=0.5),
        Combo("ties_svd", "ties_svd", BOTH, density=0.5, rank=16),
        Combo("dare_svd", "dare_linear_svd", BOTH, density=0.5, rank=16),
        Combo("negate_python", "cat", {"python": -1.0}),
        Combo("sql_only", "cat", {"sql": 1.0}),
    ),
    weight_sweep=("cat", "linear", "svd"),
    weight_pair=("sql", "python"),
    claims=(
        Claim("interference_sql", "the merged model (cat 1 + 1, the exact sum of both updates) is worse on SQL "
              "than the SQL adapter alone", "Hu et al. 2021; the merging caveat", metric="sql_loss",
              a="cat_1_1", b="sql", kind="greater", margin=0.0),
        Claim("interference_python", "and worse on Python than the Python adapter alone",
              "Hu et al. 2021; the merging caveat", metric="python_loss", a="cat_1_1", b="python", kind="greater",
              margin=0.0),
        Claim("mixture_beats_merge", "one adapter trained on both tasks, at the same total steps, beats the merge "
              "(mean of the two losses)", "the confound of adapters that each learned their own format",
              metric="pair_loss", a="mixture", b="cat_1_1", kind="less", margin=0.0),
        Claim("ties_beats_sum", "TIES on each layer's Delta W beats the plain sum (mean of the two losses)",
              "Yadav et al. 2023 (TIES-Merging, arXiv 2306.01708): TIES outperforms task arithmetic when merging",
              metric="pair_loss", a="ties_svd", b="cat_1_1", kind="less", margin=0.0),
        Claim("dare_keeps", "dropping half of each Delta W at random (DARE, rescaled) keeps the merge: within "
              "0.05 nats of the plain sum", "Yu et al. 2023 (DARE, arXiv 2311.03099): most delta parameters "
              "can be dropped with little loss", metric="pair_loss", a="dare_svd", b="cat_1_1",
              kind="equivalent", margin=0.05),
        Claim("negation_forgets", "negating the Python adapter makes Python worse than the base model", ILHARCO,
              metric="python_loss", a="negate_python", b="base_model", kind="greater", margin=0.0),
        Claim("negation_keeps_facts", "while the facts of pre-training stay within 5 points of the base model",
              f"{ILHARCO}: control tasks nearly unchanged", metric="fact_match", a="negate_python", b="base_model",
              kind="equivalent", margin=0.05),
    ),
    seeds=(0, 1, 2, 3, 4),
    seeds_note="5 seeds; one seed's three adapters take about 3 minutes on 2 cores, its combos about 30 s",
    sweep_seeds=(0,),
    sweep_steps=100,
    eval_every=100,
    eval_steps=(50,),
    eval_note="SQL 78 test pairs (all the task has), Python 261 (21 test + 240 held-out by `data.python_heldout`), "
              "240 test facts; val: each adapter's own task",
    task="sql_task",
    metric="answer_loss",
    finals=("sql_loss", "python_loss", "pair_loss", "fact_match"),
)
