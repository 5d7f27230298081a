"""Study 17_ptuning (notebook 17): is a prompt encoder (P-tuning, LSTM or MLP) more stable to train than a
soft prompt optimized directly? Stability measured as the breadth of learning rates that train, over five
seeds, and the answer loss each reaches at its own best rate.

Liu et al. 2021 ("GPT Understands, Too", arXiv 2103.10385), §3.2: optimizing the prompt embeddings directly
is hard (they are discrete-like and independent of each other), so P-tuning produces them with a prompt
encoder, a bidirectional LSTM followed by an MLP; PEFT also offers an MLP encoder.

Declared before any run:

* methods, all with 20 virtual tokens on the frozen base: a soft prompt trained directly (prompt tuning,
  initialised from sampled vocabulary, as in notebook 06), and P-tuning with an MLP and with an LSTM
  encoder (width d = 256);
* learning rates: the same six for all three, 1e-3 to 0.3 by factors of about 3 (0.3 is prompt tuning's rate
  in Lester et al.), each swept for 100 steps at batch 16 with seeds 0-4, scored by answer loss on the
  validation split (48 questions); a rate *trains* when it reaches a validation answer loss of 2.5 nats
  or less after those 100 steps (the base model's is 5.55; notebook 06's 20-token prompt reached 1.7 to 2.2
  at its rates);
* final runs: seeds 0-4 at each method's best rate for 200 steps; answer loss on val and test every 50 steps;
* evaluation: the Q/A test split, 192 questions (48 held-out people x 4 facts), all the task has;
* claims: the number of rates that train, per seed (paired by seed), and the final answer loss, Welch 95%
  intervals, margins in `STUDY.claims`.

Run time: 2,317 s (39 minutes) on 2 cores (9,000 sweep steps and 3,000 final steps; the LSTM encoder's steps are
the slowest):

    python -m peftlab.studies run 17_ptuning

>>> [m.label for m in STUDY.methods]
['prompt', 'mlp', 'lstm']
"""

from __future__ import annotations

from . import Claim, Method, Study

LRS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)
STEPS = 200
SUCCESS = 2.5  # nats of validation answer loss after the sweep's 100 steps: the rate trains
LIU = ("Liu et al. 2021 (arXiv 2103.10385), §3.2: a prompt encoder (BiLSTM + MLP) instead of optimizing the "
       "prompt embeddings directly")

STUDY = Study(
    id="17_ptuning",
    title="P-tuning's prompt encoder (none, MLP, LSTM): the breadth of learning rates that train, and the loss reached",
    notebook="17_p_tuning",
    methods=(
        Method("prompt", "prompt", {"n_tokens": 20, "init": "vocab"}, lrs=LRS, steps=STEPS),
        Method("mlp", "ptuning", {"n_tokens": 20, "encoder": "mlp"}, lrs=LRS, steps=STEPS),
        Method("lstm", "ptuning", {"n_tokens": 20, "encoder": "lstm"}, lrs=LRS, steps=STEPS),
    ),
    claims=(
        Claim("lstm_wider", "an LSTM encoder trains at more of the learning rates than a direct soft prompt",
              LIU, metric="answer_loss", a="lstm", b="prompt", kind="greater", margin=0.0, paired=True,
              on="sweep_width", success=SUCCESS),
        Claim("mlp_wider", "an MLP encoder trains at more of the learning rates than a direct soft prompt",
              LIU, metric="answer_loss", a="mlp", b="prompt", kind="greater", margin=0.0, paired=True,
              on="sweep_width", success=SUCCESS),
        Claim("lstm_lower_loss", "at its own best rate, the LSTM encoder ends below the direct soft prompt "
              "(answer loss)", LIU, metric="answer_loss", a="lstm", b="prompt", kind="less", margin=0.0),
        Claim("mlp_lower_loss", "at its own best rate, the MLP encoder ends below the direct soft prompt "
              "(answer loss)", LIU, metric="answer_loss", a="mlp", b="prompt", kind="less", margin=0.0),
        Claim("mlp_matches_lstm", "the MLP encoder does as well as the LSTM: answer loss within 0.1 nats",
              "PEFT's PromptEncoder offers both (encoder_reparameterization_type MLP or LSTM)",
              metric="answer_loss", a="mlp", b="lstm", kind="equivalent", margin=0.1),
    ),
    seeds=(0, 1, 2, 3, 4),
    seeds_note="5 seeds, in the sweep as in the final runs; one final run takes about 30 s on 2 cores",
    sweep_seeds=(0, 1, 2, 3, 4),
    sweep_steps=100,
    eval_every=50,
    eval_note="val 48 questions (12 people x 4) for the sweep, its success count and the plateau; test 192 "
              "questions (48 held-out people x 4 facts), all the task has, for the curves and the claims",
    batch_size=16,
    task="qa_task",
    base="tiny",
)
