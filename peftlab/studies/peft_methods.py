"""Study 02_peft (notebook 02): every PEFT family against full fine-tuning on held-out Q/A, each at its own
best learning rate and the same steps, five seeds each.

Declared before any run:

* methods, each trained for 300 steps at batch 16 (equal steps), AdamW, constant learning rate: full
  fine-tuning; LoRA r=8 (alpha 16) on q_proj and v_proj; bottleneck adapters m=16 after every MLP;
  prompt tuning, 20 tokens from sampled vocabulary; prefix tuning, P=10 through its MLP; P-tuning, 20
  tokens from an LSTM encoder. QLoRA is left out: on this CPU it is LoRA on a dequantized copy, its
  quality is notebook 05's question;
* learning rates: three per method, a factor of about 3 apart, placed around the rate notebook 06's study
  chose for the same method (full 1e-4, LoRA 3e-3, prompt 0.3) or the rate the earlier notebook used
  (adapters 1e-2, prefix 3e-3, P-tuning 1e-2); swept for 100 steps with seed 0, scored by answer loss on
  the validation split (48 questions);
* final runs: seeds 0-4 at the chosen rate; answer loss and exact match on val and test every 50 steps
  (exact match too, for the notebook's steps slider);
* budget rule: 300 steps for every method; the plateau is reported, as in every study;
* evaluation: the Q/A test split, 192 questions (48 held-out people x 4 facts), all the task has;
* claims: Welch 95% intervals over the 5 seeds of each side, margins in `STUDY.claims`.

Run time: one step at batch 16 takes 142 ms (full), 100 ms (LoRA), 134 ms (adapters), 125 ms (prompt),
93 ms (prefix), 140 ms (P-tuning, LSTM) on 2 idle cores; about 28 minutes in all:

    python -m peftlab.studies run 02_peft

>>> STUDY.id, [m.label for m in STUDY.methods]
('02_peft', ['full', 'lora', 'adapters', 'prompt', 'prefix', 'ptuning'])
"""

from __future__ import annotations

from . import QA_EVAL_NOTE, Claim, Method, Study

STEPS = 300
HU = ("Hu et al. 2021 (arXiv 2106.09685), Table 4: on GPT-3 175B, LoRA 73.4 vs full fine-tuning 73.8 on "
      "WikiSQL, 91.7 vs 89.5 on MNLI-m")
HOULSBY = ("Houlsby et al. 2019 (arXiv 1902.00751), abstract and Table 1: adapters within 0.4% of full "
           "fine-tuning on GLUE (BERT-Large), 3.6% parameters per task")
LESTER = ("Lester et al. 2021 (arXiv 2104.08691), Fig. 1: prompt tuning lags model tuning far behind at small "
          "sizes and matches it only at 11B")

STUDY = Study(
    id="02_peft",
    title="Every PEFT family against full fine-tuning, each at its own learning rate, held-out Q/A",
    notebook="02_what_is_peft",
    methods=(
        Method("full", "full", {}, lrs=(3e-5, 1e-4, 3e-4), steps=STEPS),
        Method("lora", "lora", {"r": 8, "alpha": 16, "targets": ("q_proj", "v_proj")}, lrs=(1e-3, 3e-3, 1e-2),
               steps=STEPS),
        Method("adapters", "adapters", {"bottleneck": 16}, lrs=(3e-3, 1e-2, 3e-2), steps=STEPS),
        Method("prompt", "prompt", {"n_tokens": 20, "init": "vocab"}, lrs=(0.1, 0.3, 1.0), steps=STEPS),
        Method("prefix", "prefix", {"n_tokens": 10}, lrs=(1e-3, 3e-3, 1e-2), steps=STEPS),
        Method("ptuning", "ptuning", {"n_tokens": 20, "encoder": "lstm"}, lrs=(3e-3, 1e-2, 3e-2), steps=STEPS),
    ),
    claims=(
        Claim("lora_close_to_full", "LoRA comes close to full fine-tuning: exact match within 10 points", HU,
              metric="exact_match", a="lora", b="full", kind="equivalent", margin=0.10),
        Claim("adapters_close_to_full", "adapters come close to full fine-tuning: exact match within 10 points",
              HOULSBY, metric="exact_match", a="adapters", b="full", kind="equivalent", margin=0.10),
        Claim("prompt_behind_lora", "at small scale soft prompts lag: prompt tuning's exact match is more than "
              "10 points below LoRA's", LESTER, metric="exact_match", a="prompt", b="lora", kind="less",
              margin=0.10),
        Claim("prefix_beats_prompt", "vectors in every layer beat vectors at the input only: prefix tuning's "
              "answer loss is below prompt tuning's",
              "Li & Liang 2021 (arXiv 2101.00190), §7.2: the embedding-only ablation (trainable input "
              "embeddings, prompt tuning's idea) falls well below prefix tuning",
              metric="answer_loss", a="prefix", b="prompt", kind="less", margin=0.0),
        Claim("ptuning_beats_prompt", "a prompt encoder (P-tuning, LSTM) beats a plain soft prompt of the same "
              "length: lower answer loss",
              "Liu et al. 2021 (arXiv 2103.10385), §3: the prompt encoder, against optimizing the embeddings "
              "directly", metric="answer_loss", a="ptuning", b="prompt", kind="less", margin=0.0),
    ),
    seeds=(0, 1, 2, 3, 4),
    seeds_note="5 seeds; one final run takes 30-45 s on 2 cores with its evaluations",
    sweep_seeds=(0,),
    sweep_steps=100,
    eval_every=50,
    eval_note=QA_EVAL_NOTE,
    curve_metrics=("exact_match",),
    batch_size=16,
    task="qa_task",
    base="tiny",
)
