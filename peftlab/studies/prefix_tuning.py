"""Study 07_prefix (notebook 07): prefix tuning with and without its MLP reparametrization (stability: the
breadth of learning rates that train), a direct prefix against prompt tuning at the same number of trainable
parameters, and prefix tuning against full fine-tuning with few training examples.

Li & Liang 2021 ("Prefix-Tuning", arXiv 2101.00190), §4.3: optimizing the prefix directly is unstable
("unstable optimization and a slight drop in performance"), so they reparametrize it through an MLP, dropped
after training; §7.2: an embedding-only prefix (trainable input vectors, prompt tuning's idea) falls well
below prefix tuning; §6.3 (Fig. 3): with few training examples prefix tuning beats fine-tuning.

Declared before any run:

* methods, all on the frozen base with P virtual positions' keys and values in each of the 4 layers:
  prefix P=10 through an MLP of width 512 ("mlp"); prefix P=10 trained directly ("direct"); a direct
  prefix P=5 (2 x 4 layers x 5 x 256 = 10,240 trainable numbers) against prompt tuning with 40 tokens
  (40 x 256 = 10,240); and, trained on the first 24 training questions only (6 people x 4 facts), the MLP
  prefix against full fine-tuning ("_low");
* learning rates: "mlp" and "direct" sweep the same ten, 1e-4 to 3 by factors of about 3, with seeds 0-4
  for 100 steps at batch 16; a rate *trains* when it reaches a validation answer loss of 2.5 nats or less
  after those 100 steps (the base model's is 5.55). The other methods sweep three or four rates each with seed 0;
  every choice is made on validation answer loss (48 questions);
* final runs: seeds 0-4 at each method's best rate for 200 steps; answer loss on val and test every 50 steps;
* evaluation: the Q/A test split, 192 questions (48 held-out people x 4 facts), all the task has;
* claims: the number of rates that train, per seed (paired by seed), and the final answer loss, Welch 95%
  intervals, margins in `STUDY.claims`.

History: the first run swept eight rates, 1e-4 to 0.3; the direct prefix chose 0.3, the top of that grid, and
trained at every rate from 1e-2 up, so its count was cut by the grid's edge (MLP - direct +1.8 rates, "holds").
This run widened the shared grid to 3 and the three-rate grids at their open edges. Now the direct prefix chooses
0.3 inside the grid and still trains at 3, while the MLP prefix trains at 1e-4, the bottom: both ranges reach an
end of the grid, so the count measures the grid as much as the method (notebook 07 says so). "direct5" chose 0.3,
the top of its grid: its loss is an upper bound, which only makes its claim against prompt40 conservative.

Run time: 2,550 s (43 minutes) on 2 cores, 17,500 training steps, part of it sharing the cores with other work:

    python -m peftlab.studies run 07_prefix

>>> [m.label for m in STUDY.methods]
['mlp', 'direct', 'direct5', 'prompt40', 'mlp_low', 'full_low']
"""

from __future__ import annotations

from . import Claim, Method, Study

LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)
STEPS = 200
SUCCESS = 2.5  # nats of validation answer loss after the sweep's 100 steps: the rate trains
N_LOW = 24
ONE = (0,)
LI43 = ("Li & Liang 2021 (arXiv 2101.00190), §4.3: optimizing the prefix directly leads to \"unstable "
        "optimization and a slight drop in performance\"; hence the MLP")

STUDY = Study(
    id="07_prefix",
    title="Prefix tuning: MLP reparametrization vs direct (learning-rate breadth), vs prompt tuning at equal size, low data",
    notebook="07_prefix_tuning",
    methods=(
        Method("mlp", "prefix", {"n_tokens": 10, "reparametrize": True}, lrs=LRS, steps=STEPS),
        Method("direct", "prefix", {"n_tokens": 10, "reparametrize": False}, lrs=LRS, steps=STEPS),
        Method("direct5", "prefix", {"n_tokens": 5, "reparametrize": False}, lrs=(1e-2, 3e-2, 0.1, 0.3), steps=STEPS,
               sweep_seeds=ONE),
        Method("prompt40", "prompt", {"n_tokens": 40, "init": "vocab"}, lrs=(0.03, 0.1, 0.3, 1.0), steps=STEPS,
               sweep_seeds=ONE),
        Method("mlp_low", "prefix", {"n_tokens": 10, "reparametrize": True}, lrs=(3e-4, 1e-3, 3e-3), steps=STEPS,
               n_train=N_LOW, sweep_seeds=ONE),
        Method("full_low", "full", {}, lrs=(3e-5, 1e-4, 3e-4, 1e-3), steps=STEPS, n_train=N_LOW, sweep_seeds=ONE),
    ),
    claims=(
        Claim("mlp_wider", "the MLP reparametrization trains at more of the learning rates than a prefix "
              "optimized directly", LI43, metric="answer_loss", a="mlp", b="direct", kind="greater", margin=0.0,
              paired=True, on="sweep_width", success=SUCCESS),
        Claim("mlp_lower_loss", "each at its own best rate, the MLP prefix ends below the direct one (the "
              "\"slight drop\" of direct optimization)", LI43, metric="answer_loss", a="mlp", b="direct",
              kind="less", margin=0.0),
        Claim("prefix_beats_prompt_same_size", "at the same 10,240 trainable numbers, a direct prefix in every "
              "layer beats prompt tuning at the input (answer loss)",
              "Li & Liang 2021, §7.2: the embedding-only ablation falls well below prefix tuning",
              metric="answer_loss", a="direct5", b="prompt40", kind="less", margin=0.0),
        Claim("low_data_prefix_beats_full", "with few examples (24 questions) prefix tuning beats full "
              "fine-tuning (answer loss on held-out people)",
              "Li & Liang 2021, §6.3 and Fig. 3: in low-data settings prefix tuning outperforms fine-tuning",
              metric="answer_loss", a="mlp_low", b="full_low", kind="less", margin=0.0),
    ),
    seeds=(0, 1, 2, 3, 4),
    seeds_note="5 seeds in the final runs and in the sweep of the two compared for breadth; one final run takes "
               "20-35 s on 2 cores",
    sweep_seeds=(0, 1, 2, 3, 4),
    sweep_steps=100,
    eval_every=50,
    eval_note="val 48 questions (12 people x 4) for the sweeps, the success count and the plateau; test 192 "
              "questions (48 held-out people x 4 facts), all the task has, for the curves and the claims",
    batch_size=16,
    task="qa_task",
    base="tiny",
)
