"""Study 13_fusion (notebook 13): AdapterFusion as Pfeiffer et al. ran it. For one target task (Python), one
fusion over N = 3 source adapters (Q/A, SQL and Python itself), trained on the target's data, against the
target's own adapter and against one multi-task adapter trained on all three tasks.

Pfeiffer et al. 2021 (arXiv 2005.00247): stage 1 trains one bottleneck adapter per task, each on its own data
(single-task adapters, ST-A); stage 2 freezes them and trains, for each target task m, a fusion layer over all
N adapters on m's data; Table 1 compares Fusion with m's own adapter and with multi-task training (MT-A). The
abstract: "our approach outperforms traditional strategies such as full fine-tuning as well as multi-task
learning". Adapters sit once per layer, after the feed-forward sublayer, as in the paper's
configuration (`placement=("mlp",)`).

Declared before any run:

* base `tiny`; bottleneck adapters m = 32 after each layer's MLP (ReLU; W_up and b_up start at zero), batch 16,
  AdamW, constant rate:
  - stage 1, one adapter per task, 200 steps each: "qa" (`data.qa_task`), "sql" (`data.sql_task`) and
    "python" (`data.python_task`, 176 pairs: the target, and the target's own adapter);
  - "fusion": stage 2, per seed, that seed's three stage-1 adapters frozen and a fusion layer over them in
    every layer (Q, K, V, 3 d^2 each, V from the identity; the paper's regulariser pulling V towards the
    identity is not used), trained on Python for 200 steps;
  - "multitask": one adapter of the same size trained on the three tasks at once (`data.qa_sql_python_task`,
    about equal weight per task) for 800 steps: every step of the fusion pipeline (3 x 200 in stage 1 and
    200 in stage 2), so the two ways of using three tasks get equal compute. The paper's MT-A (after Stickland &
    Murray 2019) trains one adapter per task together with the base weights; this is one shared adapter on the
    frozen base, the size of a single adapter: a simpler, cheaper rival;
* learning rates: each adapter sweeps 1e-3 to 1e-1 and the fusion 3e-4 to 3e-2 (five rates each) for 100 steps
  with seed 0, chosen on the val answer loss of the method's own training task (the fusion's: Python; its
  sweep fuses the seed-0 adapters of stage 1);
* evaluation: Python answer loss and exact answers (whole answer right, greedy) on 261 Python test pairs (21
  test + `data.python_heldout`, 240 more); curves on each method's own task every 50 steps;
* final runs: seeds 0-4; claims: Welch 95% intervals over the 5 seeds, margins in `STUDY.claims`.

Run time: 2,541 s (42 min) on 2 cores, nothing else heavy running:

    python -m peftlab.studies run 13_fusion

>>> [m.label for m in STUDY.methods]
['qa', 'sql', 'python', 'fusion', 'multitask']
"""

from __future__ import annotations

from . import FUSION, Claim, Method, Study

ADAPTER = {"bottleneck": 32, "placement": ("mlp",)}
ADAPTER_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
PFEIFFER = "Pfeiffer et al. 2021 (AdapterFusion, arXiv 2005.00247), Table 1 and the abstract"

STUDY = Study(
    id="13_fusion",
    title="AdapterFusion over three source adapters for a Python target, vs Python's own adapter and a "
          "multi-task adapter",
    notebook="13_adapter_fusion",
    methods=(
        Method("qa", "adapters", ADAPTER, lrs=ADAPTER_LRS, steps=200, task="qa_task"),
        Method("sql", "adapters", ADAPTER, lrs=ADAPTER_LRS, steps=200, task="sql_task"),
        Method("python", "adapters", ADAPTER, lrs=ADAPTER_LRS, steps=200, task="python_task"),
        Method("fusion", FUSION, {}, lrs=(3e-4, 1e-3, 3e-3, 1e-2, 3e-2), steps=200, task="python_task",
               sources=("qa", "sql", "python")),
        Method("multitask", "adapters", ADAPTER, lrs=ADAPTER_LRS, steps=800, task="qa_sql_python_task"),
    ),
    claims=(
        Claim("fusion_beats_own", "fusion over the three adapters, trained on Python, has a lower Python answer "
              "loss than Python's own adapter", PFEIFFER, metric="python_loss", a="fusion", b="python",
              kind="less", margin=0.0),
        Claim("fusion_answers_more", "and gets more Python answers exactly right", PFEIFFER,
              metric="python_match", a="fusion", b="python", kind="greater", margin=0.0),
        Claim("fusion_beats_multitask", "fusion has a lower Python answer loss than one adapter trained on the "
              "three tasks at once, at equal compute", PFEIFFER, metric="python_loss", a="fusion", b="multitask",
              kind="less", margin=0.0),
    ),
    seeds=(0, 1, 2, 3, 4),
    seeds_note="5 seeds; one seed's five runs take about 6 minutes on 2 cores",
    sweep_seeds=(0,),
    sweep_steps=100,
    eval_every=50,
    eval_note="Python: 261 test pairs (21 test + 240 held-out by `data.python_heldout`), 21 val; curves on each "
              "method's own task (Q/A 48 val / 192 test, SQL 78 / 78, the mixture 63 / 63)",
    task="python_task",
    metric="answer_loss",
    finals=("python_loss", "python_match"),
)
