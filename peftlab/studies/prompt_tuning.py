"""Study 06_prompt (notebook 06): prompt tuning against LoRA and full fine-tuning on held-out Q/A, and
the two design choices Lester et al. ablate, prompt length and initialisation, on a 3.3M-parameter base.

Lester et al. 2021 ("The Power of Scale for Parameter-Efficient Prompt Tuning", arXiv:2104.08691): Fig. 1,
prompt tuning matches model tuning (full fine-tuning) only at the largest T5 (XXL, 11B) and lags far
behind at small sizes; §3.2 (Fig. 3), prompts longer than about 20 tokens gain little, and class-label
initialisation beats sampled vocabulary at small sizes (the differences vanish at 11B).

Declared before any run:

* methods, every one trained for 400 steps at batch 16 (equal steps), AdamW, constant learning rate:
  prompt tuning with 5, 20 and 50 tokens from sampled vocabulary ("vocab" init), 20 tokens initialised
  from class labels (the embeddings of answer words, `LABEL_TEXT`), LoRA r=8 on q_proj and v_proj, and
  full fine-tuning;
* learning rates: prompt tuning {0.03, 0.1, 0.3} (Lester et al. use 0.3), LoRA {1e-3, 3e-3, 1e-2},
  full fine-tuning {1e-4, 3e-4, 1e-3}; each swept for 100 steps with seeds 0 and 1 and scored by the
  answer loss on the validation split (48 questions); the best mean wins;
* final runs: seeds 0-4 at each method's chosen rate; answer loss on val and test every 50 steps;
* budget rule: 400 steps for every method; the plateau (val answer loss improving by less than 1% over
  the last 25% of the steps) is reported per method, and a claim on a method without one says so;
* evaluation: the Q/A test split, 192 questions (48 held-out people x 4 facts, all the task has);
  answer loss and exact match (counted by `greedy_accuracy`, the same count as `exact_match`) after 400 steps;
* claims: Welch 95% intervals over the 5 seeds of each side, margins as declared in `STUDY.claims`.

Run time: one step at batch 16 takes 97 / 125 / 174 ms (prompt tuning, 5 / 20 / 50 tokens), 100 ms
(LoRA) and 142 ms (full fine-tuning) on 2 idle cores; the answer loss on val + test 0.6-1.2 s. About
36 minutes in all (`work(STUDY)`: 600 sweep steps and 2,000 final steps per method, 45 evaluations):

    python -m peftlab.studies run 06_prompt

>>> STUDY.id, len(STUDY.seeds), [m.label for m in STUDY.methods]
('06_prompt', 5, ['prompt20', 'prompt20_label', 'prompt5', 'prompt50', 'lora', 'full'])
"""

from __future__ import annotations

from . import QA_EVAL_NOTE, Claim, Method, Study

LABEL_TEXT = " Varn baker cat red"  # one answer word per attribute (city, job, pet, color): 19 bytes
PROMPT_LRS = (0.03, 0.1, 0.3)
STEPS = 400

FIG1 = ("Lester et al. 2021 (arXiv 2104.08691), Fig. 1: prompt tuning matches model tuning only at T5-XXL "
        "(11B); at small sizes it lags far behind")
ABLATION = "Lester et al. 2021, §3.2 and Fig. 3 (ablations, T5 from Small to XXL)"

STUDY = Study(
    id="06_prompt",
    title="Prompt tuning vs LoRA and full fine-tuning, prompt length and initialisation, held-out Q/A",
    notebook="06_prompt_tuning",
    methods=(
        Method("prompt20", "prompt", {"n_tokens": 20, "init": "vocab"}, lrs=PROMPT_LRS, steps=STEPS),
        Method("prompt20_label", "prompt", {"n_tokens": 20, "init": "text", "init_text": LABEL_TEXT},
               lrs=PROMPT_LRS, steps=STEPS),
        Method("prompt5", "prompt", {"n_tokens": 5, "init": "vocab"}, lrs=PROMPT_LRS, steps=STEPS),
        Method("prompt50", "prompt", {"n_tokens": 50, "init": "vocab"}, lrs=PROMPT_LRS, steps=STEPS),
        Method("lora", "lora", {"r": 8, "alpha": 16, "targets": ("q_proj", "v_proj")}, lrs=(1e-3, 3e-3, 1e-2),
               steps=STEPS),
        Method("full", "full", {}, lrs=(1e-4, 3e-4, 1e-3), steps=STEPS),
    ),
    claims=(
        Claim("matches_full", "prompt tuning matches full fine-tuning (answer loss within 0.1 nats)", FIG1,
              metric="answer_loss", a="prompt20", b="full", kind="equivalent", margin=0.1),
        Claim("full_lower_loss", "at small scale full fine-tuning is well ahead: answer loss lower by more than "
              "0.1 nats", FIG1, metric="answer_loss", a="full", b="prompt20", kind="less", margin=0.1),
        Claim("full_more_exact", "at small scale full fine-tuning answers more exactly: by more than 5 points",
              FIG1, metric="exact_match", a="full", b="prompt20", kind="greater", margin=0.05),
        Claim("lora_lower_loss", "LoRA is ahead of prompt tuning: answer loss lower by more than 0.1 nats",
              "Hu et al. 2021 (arXiv 2106.09685), Table 4: on GPT-3 175B, LoRA above prefix-embedding tuning "
              "(trainable input tokens, prompt tuning's idea)",
              metric="answer_loss", a="lora", b="prompt20", kind="less", margin=0.1),
        Claim("longer_helps", "a 20-token prompt beats a 5-token one (lower answer loss)", ABLATION,
              metric="answer_loss", a="prompt20", b="prompt5", kind="less", margin=0.0),
        Claim("flat_beyond_20", "beyond 20 tokens little changes: 50 and 20 tokens agree within 0.05 nats",
              ABLATION, metric="answer_loss", a="prompt50", b="prompt20", kind="equivalent", margin=0.05),
        Claim("class_label_init", "class-label initialisation beats sampled vocabulary (lower answer loss)",
              ABLATION, metric="answer_loss", a="prompt20_label", b="prompt20", kind="less", margin=0.0),
    ),
    seeds=(0, 1, 2, 3, 4),
    seeds_note="5 seeds; one final run takes 25-80 s on 2 cores with its evaluations",
    sweep_seeds=(0, 1),
    sweep_steps=100,
    eval_every=50,
    eval_note=QA_EVAL_NOTE,
    batch_size=16,
    task="qa_task",
    base="tiny",
)
