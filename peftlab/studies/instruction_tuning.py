"""Study 09_instruct (notebook 09): what instruction tuning teaches a 3.3M-parameter base model, with every
held-out input made of words no training set holds (`instruct.HELDOUT_WORDS`).

Wei et al. 2021 (FLAN, arXiv 2109.01652) fine-tune on tasks phrased as instructions and evaluate on
held-out task clusters; §4.2 finds that at 8B parameters and below instruction tuning hurt held-out tasks.
Chung et al. 2022 (Flan-T5, arXiv 2210.11416) find gains on held-out benchmarks from 80M parameters up
with 1,836 tasks. Masking the prompt out of the loss is the usual choice (Alpaca, FLAN); Shi et al. 2024
(arXiv 2405.14394) report that a loss on the instruction too helps with short answers and little data.

Declared before any run:

* data (`instruct.instruct_sets`): train the live recipe's 692 records (six rule families on the 40 words
  of `data.WORDS`, 120 fact questions about the Q/A training people); val 188 records from the training
  distribution, as a practitioner validates (trained words in new combinations, 140; questions about the
  12 Q/A validation people, 48), for the sweep and the plateau; test 240 records, 40 per family, on 40
  held-out words of 4 to 9 letters (new inputs); at the end also the 240 test inputs in
  `instruct.NEW_WORDINGS` (ROUGE-L at most 0.2 to any trained wording), 200 records of five
  `NEW_FAMILIES` and 192 fact questions about the 48 Q/A test people. (A first run chose its rates on
  held-out words instead; there every model fails, and the lowest loss went to full fine-tuning at 1e-2,
  collapsed to answering "for": the selection set must be one a model can learn.)
* methods, batch 16, AdamW, constant rate, 300 steps (about 7 passes over the live records):
  - "full": full fine-tuning, loss on the response;
  - "full_all": the same with the loss on every token (prompt too): the masking ablation;
  - "lora": LoRA r = 8, alpha 16, every linear layer, loss on the response;
  - "more_data": full fine-tuning on the teacher's data (`teacher.teacher_task`: 5,612 records, 70% of the
    added inputs made-up words, three wordings per family) for the same 300 steps: more and more varied
    data at equal compute, the comparison notebook 09 used to make against a teacher trained 15 times longer;
  - "untuned" (a `Combo` of kind base): the base model itself, on every final metric;
* learning rates: four per method, 3e-4 to 1e-2 by factors of about 3 (LoRA 1e-3 to 3e-2), seed 0, 100 steps,
  chosen on val answer loss;
* final runs: seeds 0-4 at the chosen rate; val and test answer loss at steps 50, 100, 200, 300; at the end
  on test: answer loss, exact match (`greedy_accuracy`), the format (`instruct.format_rate`: the answer in
  its family's form, then the terminator, right or wrong), and exact match on the new wordings, new
  families and held-out facts;
* claims: Welch 95% intervals over the 5 seeds, margins in `STUDY.claims`.

Run time: 2,813 s (47 min) on 2 cores, 7,600 training steps:

    python -m peftlab.studies run 09_instruct

Chosen rates: full and full_all 1e-3, lora 3e-3, all inside their grids; more_data 3e-4, the lowest rate of its
grid. No method met the plateau rule within 300 steps.

>>> [m.label for m in STUDY.methods]
['full', 'full_all', 'lora', 'more_data']
"""

from __future__ import annotations

from . import Claim, Combo, Method, Study

STEPS = 300
GRID = (3e-4, 1e-3, 3e-3, 1e-2)
LORA = {"r": 8, "alpha": 16, "targets": "all-linear"}
FLAN = "Wei et al. 2021 (FLAN, arXiv 2109.01652)"

STUDY = Study(
    id="09_instruct",
    title="Instruction tuning on new inputs, new wordings, new tasks and held-out facts; loss masking; LoRA; "
          "more data at equal compute",
    notebook="09_instruction_tuning",
    methods=(
        Method("full", "full", {}, lrs=GRID, steps=STEPS),
        Method("full_all", "full", {}, lrs=GRID, steps=STEPS, loss_on="all"),
        Method("lora", "lora", LORA, lrs=(1e-3, 3e-3, 1e-2, 3e-2), steps=STEPS),
        Method("more_data", "full", {}, lrs=GRID, steps=STEPS, task="teacher_task"),
    ),
    combos=(Combo("untuned", "base"),),
    claims=(
        Claim("format_learned", "instruction tuning teaches the format: on new inputs, more than 50 points more "
              "answers take their family's form and stop at the terminator than the base model's",
              f"{FLAN}; Zhou et al. 2023 (LIMA, arXiv 2305.11206)", metric="format_ok", a="full", b="untuned",
              kind="greater", margin=0.5),
        Claim("follows_new_inputs", "the tuned model answers trained instructions on inputs it never saw: exact "
              "match more than 10 points above the base model's", FLAN, metric="exact_match", a="full",
              b="untuned", kind="greater", margin=0.1),
        Claim("follows_new_wordings", "it follows new wordings of trained instructions: exact match more than 5 "
              "points above the base model's", f"{FLAN}: several templates per task", metric="wording_match",
              a="full", b="untuned", kind="greater", margin=0.05),
        Claim("follows_new_tasks", "it follows instructions for tasks it never trained on: exact match more than "
              "5 points above the base model's", f"{FLAN}, 137B; §4.2: hurts at 8B and below; Flan-T5 "
              "(arXiv 2210.11416): gains from 80M with 1,836 tasks", metric="family_match", a="full",
              b="untuned", kind="greater", margin=0.05),
        Claim("answers_held_out_facts", "it answers instruction-phrased questions about facts it only read in "
              "pre-training: exact match more than 20 points above the base model's", "Zhou et al. 2023 (LIMA)",
              metric="facts_match", a="full", b="untuned", kind="greater", margin=0.2),
        Claim("masking_more_answers", "loss on the response only gives more exact answers on new inputs than "
              "loss on every token", "standard practice (FLAN, Alpaca); Shi et al. 2024 (arXiv 2405.14394) "
              "find the opposite with short answers and little data", metric="exact_match", a="full",
              b="full_all", kind="greater", margin=0.0),
        Claim("masking_lower_loss", "loss on the response only gives a lower answer loss on new inputs",
              "as above", metric="answer_loss", a="full", b="full_all", kind="less", margin=0.0),
        Claim("lora_matches_full", "LoRA r = 8 reaches full fine-tuning's answer loss on new inputs, within "
              "0.1 nats", "Hu et al. 2021 (LoRA, arXiv 2106.09685)", metric="answer_loss", a="lora", b="full",
              kind="equivalent", margin=0.1),
        Claim("more_data_more_answers", "more and more varied instruction data teaches more at equal compute: "
              "exact match on new inputs above the live recipe's", f"{FLAN}: more tasks and templates help",
              metric="exact_match", a="more_data", b="full", kind="greater", margin=0.0),
        Claim("more_data_new_wordings", "more varied data (three wordings per family) helps on new wordings: "
              "exact match above the live recipe's", f"{FLAN}: several templates per task",
              metric="wording_match", a="more_data", b="full", kind="greater", margin=0.0),
    ),
    seeds=(0, 1, 2, 3, 4),
    seeds_note="5 seeds in the final runs; 1 (seed 0) in the sweep",
    sweep_seeds=(0,),
    sweep_steps=100,
    eval_every=100,
    eval_steps=(50,),
    eval_note="val 188 records from the training distribution (trained words in new combinations, questions about "
              "12 validation people) for the sweep and the plateau; test 240 records (40 per family on 40 held-out "
              "words) for the curves and the claims; at the end 240 new wordings, 200 new-family records and 192 "
              "held-out fact questions",
    task="instruct_task",
    finals=("answer_loss", "exact_match", "format_ok", "wording_match", "family_match", "facts_match"),
)
