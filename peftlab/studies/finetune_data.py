"""Study 10_data (notebook 10): what Q/A fine-tuning on some people teaches about others, and what that
rests on: the phrasings of pre-training, the number of people, and wrong answers in the fine-tuning set.

Allen-Zhu & Li 2023 ("Physics of Language Models: Part 3.1, Knowledge Storage and Extraction", arXiv
2309.14316), abstract: for knowledge to be extracted by questions after fine-tuning, "it must be sufficiently
augmented (e.g., through paraphrasing, sentence shuffling, translations) during pretraining. Without such
augmentation, knowledge may be memorized but not extractable, leading to 0% accuracy, regardless of
subsequent instruction fine-tuning." Zhou et al. 2023 (LIMA, arXiv 2305.11206), abstract: "almost all knowledge
in large language models is learned during pretraining, and only limited instruction tuning data is
necessary to teach models to produce high quality output" (the superficial alignment hypothesis).

Declared before any run:

* task: `data.qa_task`, questions about 60 of the 120 people of pre-training (240 train questions, 4 per
  person); val 48 questions (12 other people) for the sweep and the plateau; test 192 questions about the
  48 remaining people, whose facts the model only read in pre-training;
* bases: `tiny` (each fact in four phrasings, plus stories) and `tiny_one` (the same recipe on each fact in
  one phrasing, as often, and no stories: `python -m peftlab.pretrain --name tiny_one --phrasings one`);
* methods, all full fine-tuning, loss on the answers, batch 16, AdamW, constant rate, 200 steps:
  - "full": `tiny`, all 60 people;
  - "one_phrasing": `tiny_one`, all 60 people;
  - "wrong30": `tiny`, 30% of the 240 training answers replaced by another value of the asked attribute
    (`data.wrong_answers`, the same 72 answers in every run); val and test stay correct;
  - "people5", "people15", "people30": `tiny`, the first 5, 15, 30 people (20, 60, 120 questions), the same
    200 steps (equal compute, so fewer people are seen more often);
* learning rates: "full" and "one_phrasing" sweep five, 1e-5 to 1e-3 by factors of about 3, seeds 0 and 1;
  the others four, 3e-5 to 1e-3, seed 0; 100 steps; chosen on val answer loss;
* final runs: seeds 0-4 at the chosen rate; val answer loss and test answer loss and exact match every 50
  steps; at the end also Q/A about 12 strangers pre-training never mentions (48 questions; a uniform guess
  among the asked attribute's values gets 7.3%);
* claims: Welch 95% intervals over the 5 seeds (one-sample against the base model's own value), margins in
  `STUDY.claims`.

Run time: 1,566 s (26 minutes) on 2 idle cores, 9,600 training steps:

    python -m peftlab.studies run 10_data

Every chosen rate lies inside its grid: full and the three people subsets 1e-4, one_phrasing and wrong30 3e-4.

>>> [m.label for m in STUDY.methods]
['full', 'one_phrasing', 'wrong30', 'people5', 'people15', 'people30']
"""

from __future__ import annotations

from . import BASE, Claim, Method, Study

STEPS = 200
GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
ALLEN_ZHU = ("Allen-Zhu & Li 2023 (arXiv 2309.14316), abstract: without knowledge augmentation in pre-training, "
             "knowledge \"may be memorized but not extractable, leading to 0% accuracy, regardless of subsequent "
             "instruction fine-tuning\"")
LIMA = "Zhou et al. 2023 (LIMA, arXiv 2305.11206): the superficial alignment hypothesis"

STUDY = Study(
    id="10_data",
    title="Q/A fine-tuning on some people, asked about others: phrasings of pre-training, number of people, "
          "wrong answers",
    notebook="10_pretraining_vs_finetuning_data",
    methods=(
        Method("full", "full", {}, lrs=GRID, steps=STEPS),
        Method("one_phrasing", "full", {}, lrs=GRID, steps=STEPS, base="tiny_one"),
        Method("wrong30", "full", {}, lrs=GRID[1:], steps=STEPS, sweep_seeds=(0,), wrong=0.3),
        Method("people5", "full", {}, lrs=GRID[1:], steps=STEPS, sweep_seeds=(0,), n_train=20),
        Method("people15", "full", {}, lrs=GRID[1:], steps=STEPS, sweep_seeds=(0,), n_train=60),
        Method("people30", "full", {}, lrs=GRID[1:], steps=STEPS, sweep_seeds=(0,), n_train=120),
    ),
    claims=(
        Claim("format_transfers", "fine-tuning on Q/A about 60 people makes the model answer questions about 48 "
              "others whose facts it only read: held-out exact match more than 50 points above the base model",
              LIMA, metric="exact_match", a="full", b=BASE, kind="greater", margin=0.5),
        Claim("augmentation_needed", "without knowledge augmentation (one phrasing per fact in pre-training) "
              "the held-out answers collapse: more than 20 points below the four-phrasing base", ALLEN_ZHU,
              metric="exact_match", a="one_phrasing", b="full", kind="less", margin=0.2),
        Claim("wrong_answers_cost", "30% wrong answers in the fine-tuning set lower held-out exact match",
              "data quality: LIMA (Zhou et al. 2023) curates its 1,000 examples by hand for quality and diversity",
              metric="exact_match", a="wrong30", b="full", kind="less", margin=0.0),
        Claim("few_people_enough", "15 people teach the format as well as 60: held-out exact match within 10 "
              "points, at the same 200 steps", LIMA, metric="exact_match", a="people15", b="full",
              kind="equivalent", margin=0.10),
    ),
    seeds=(0, 1, 2, 3, 4),
    seeds_note="5 seeds in the final runs; 2 in the sweep for full and one_phrasing, 1 for the others",
    sweep_seeds=(0, 1),
    sweep_steps=100,
    eval_every=50,
    eval_note="val 48 questions (12 people x 4) for the sweep and the plateau; test 192 questions (48 held-out "
              "people x 4 facts), all the task has, for the curves and the claims; 48 strangers' questions at "
              "the end",
    finals=("answer_loss", "exact_match", "stranger_match"),
    curve_metrics=("exact_match",),
    curve_splits=("test",),
)
