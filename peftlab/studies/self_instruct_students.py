"""Study 19_self_instruct (notebook 19): what the teacher's generated tasks teach a student, and what each
filter of the self-instruct pipeline is worth.

Wang et al. 2022 ("Self-Instruct", arXiv 2212.10560) bootstrap 52K instructions from 175 seed tasks with
GPT-3, keep a new instruction only when its ROUGE-L to every kept one is below 0.7, and report that
GPT-3 fine-tuned on the result gains 33 points over vanilla GPT-3 on Super-NaturalInstructions (abstract).
The paper filters with heuristics and has no correctness check; the families here have rules, so one is
possible, and the study switches each filter off on its own.

Declared before any run:

* data: the shipped teacher writes `self_instruct.STUDY_GENERATIONS` (256) tasks from the 21 seed tasks
  (`self_instruct.study_pool`: one shot, temperature 0.7, top-k 20, greedy outputs, seeded); the students'
  training sets (`self_instruct.STUDENTS`): the seeds alone (21), the seeds plus the generations that pass every
  filter (123), with the novelty filter off (174), with the correctness filter off (221). The one-shot prompts
  are always seeds, so switching a filter off changes which generations are kept, never the generations;
* evaluation (`instruct.instruct_sets`): val 188 records from the training distribution (trained words in new
  combinations, questions about the 12 Q/A validation people) for the sweep and the plateau; test 240 records,
  40 per family, on 40 held-out words of 4 to 9 letters that no training set holds (the best constant answer
  per family scores 2.9%; notebook 19 shows it);
* students: full fine-tuning from the base model, loss on the response, batch 16, AdamW, constant rate, 20
  epochs of their own set each (equal epochs: 27, 154, 218 and 277 steps);
* learning rates: 3e-4, 1e-3, 3e-3, 1e-2, seed 0, 50 steps, chosen on val answer loss (the seeds-only
  student sweeps 50 steps, more than its 27: the sweep has one length for all);
* final runs: seeds 0-4 at the chosen rate; val and test answer loss every 25 steps; at the end on test:
  answer loss, exact match (`greedy_accuracy`) and the format (`instruct.format_rate`);
* claims: Welch 95% intervals over the 5 seeds, margins in `STUDY.claims`.

Run time: 1,828 s (30 min) on 2 cores, 4,180 training steps:

    python -m peftlab.studies run 19_self_instruct

Chosen rates: filtered 1e-3 and no_novelty 3e-3, inside the grid; seeds and no_correct 3e-4, its lowest rate.

>>> [m.label for m in STUDY.methods], [m.steps for m in STUDY.methods]
(['seeds', 'filtered', 'no_novelty', 'no_correct'], [27, 154, 218, 277])
"""

from __future__ import annotations

import math

from . import Claim, Method, Study

EPOCHS, BATCH = 20, 16
SIZES = {"seeds": 21, "filtered": 123, "no_novelty": 174, "no_correct": 221}  # tests/test_studies.py checks
GRID = (3e-4, 1e-3, 3e-3, 1e-2)
WANG = "Wang et al. 2022 (Self-Instruct, arXiv 2212.10560)"

STUDY = Study(
    id="19_self_instruct",
    title="Self-instruct students: seeds alone vs the teacher's generated tasks, each filter switched off",
    notebook="19_self_instruct",
    methods=tuple(Method(name, "full", {}, lrs=GRID, steps=math.ceil(EPOCHS * n / BATCH), task=f"si_{name}")
                  for name, n in SIZES.items()),
    claims=(
        Claim("generated_more_answers", "the teacher's filtered tasks teach the student more than the seeds alone: "
              "exact match on new inputs above the seeds-only student's", f"{WANG}: +33 points on SuperNI over "
              "vanilla GPT-3", metric="exact_match", a="filtered", b="seeds", kind="greater", margin=0.0),
        Claim("generated_lower_loss", "the filtered tasks lower the answer loss on new inputs below the seeds-only "
              "student's", WANG, metric="answer_loss", a="filtered", b="seeds", kind="less", margin=0.0),
        Claim("novelty_filter_helps", "the novelty filter (ROUGE-L < 0.7) helps: exact match with it above exact "
              "match without it", f"{WANG}: the filter keeps the pool diverse", metric="exact_match",
              a="filtered", b="no_novelty", kind="greater", margin=0.0),
        Claim("correctness_filter_helps", "dropping wrong outputs helps: exact match with the correctness filter "
              "above exact match without it", "not in the paper, which has no correctness check; its quality review "
              "finds the generated instances noisier than the instructions", metric="exact_match", a="filtered", b="no_correct",
              kind="greater", margin=0.0),
        Claim("correctness_filter_lower_loss", "dropping wrong outputs lowers the answer loss on new inputs",
              "as above", metric="answer_loss", a="filtered", b="no_correct", kind="less", margin=0.0),
    ),
    seeds=(0, 1, 2, 3, 4),
    seeds_note="5 seeds in the final runs; 1 (seed 0) in the sweep",
    sweep_seeds=(0,),
    sweep_steps=50,
    eval_every=25,
    eval_note="val 188 records from the training distribution for the sweep and the plateau; test 240 records (40 "
              "per family on 40 held-out words) for the curves and the claims",
    task="si_filtered",
    batch_size=BATCH,
    finals=("answer_loss", "exact_match", "format_ok"),
)
