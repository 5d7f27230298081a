"""The self-instruct teacher of notebooks 09 and 19: its data, its recipe and the command that makes it.

    python -m peftlab.teacher --train      # train with RECIPE and ship peftlab/checkpoints/teacher.*
    python -m peftlab.teacher              # print the shipped teacher's recipe and measured metrics

The teacher is the base model instruction-tuned for far longer on far more data than any student
(`teacher_tasks`: more inputs per family, most of them made-up words so that the operations must be
learned rather than memorised, never a held-out input, several wordings per family), both in the
instruction template and in the task-writing format of `peftlab.self_instruct`, so it has learned to
answer tasks and to write them. Training is seeded: the same machine gives the same weights bit for
bit. `load_base("teacher")` loads the shipped one with its hash checked.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from . import data
from .checkpoint import CHECKPOINT_DIR, load_base, manifest, save_checkpoint
from .checks import int_at_least
from .data import Example, Instruction
from .evaluate import greedy_accuracy
from .instruct import (DEFAULT_TEMPLATE, constant_accuracy, fixed_width_batches, instruct_sets, instruct_task,
                       rule_record, to_examples, training_records)
from .self_instruct import format_task, seed_tasks, self_instruct, writing_prompt
from .train import train

COMMAND = "python -m peftlab.teacher --train"

# Words the teacher's extra records draw on: the instruction word list plus the world's towns, jobs,
# pets and colors (lower case), so the teacher sees more distinct inputs than any student.
TEACHER_VOCABULARY = tuple(sorted(set(data.WORDS) | {w.lower() for ws in data.ATTRIBUTES.values() for w in ws}))


def pseudo_word(rng: random.Random) -> str:
    """A pronounceable made-up word of two or three syllables.

    >>> pseudo_word(random.Random(0))
    'tazwono'
    """
    consonants, vowels = "bcdfghklmnprstvwz", "aeiou"
    return "".join(rng.choice(consonants) + rng.choice(vowels) + (rng.choice(consonants) if rng.random() < 0.3 else "")
                   for _ in range(rng.randint(2, 3)))


@functools.cache
def pseudo_words() -> tuple[str, ...]:
    """Made-up words, none of them a real one of TEACHER_VOCABULARY (built on first use, not at import).

    With 93 real words a model can memorise each family's answers word by word; with thousands of
    made-up ones it has to learn the operation, which then applies, in part, to held-out real words
    too (teacher.json: per family on 240 records of `instruct.HELDOUT_WORDS`; reverse and sort stay at 0%).
    """
    return tuple(sorted({pseudo_word(random.Random(f"pseudo-{i}")) for i in range(5000)} - set(TEACHER_VOCABULARY)))


def heldout_inputs(seed: int = 0) -> set[tuple[str, str]]:
    """(family, input) pairs of the rule families in the val and test splits of `data.instructions`:
    every held-out "new input" a model is evaluated on comes from them, so no training set may
    contain one. (Held-out facts are about the Q/A test people instead, see `instruct.heldout_suite`.)"""
    split = data.instructions(seed)
    return {(r.family, r.input) for r in split["val"] + split["test"] if r.family in data.RULES}


def teacher_records(seed: int = 0, per_family: int = 800, pseudo: float = 0.7) -> list[Instruction]:
    """The teacher's larger instruction set: `training_records` (every fact question about the Q/A
    training people) plus up to `per_family` new rule records per family, each with its words drawn
    from `pseudo_words()` (probability `pseudo`) or TEACHER_VOCABULARY, never an input held out for that family.

    >>> records = teacher_records(per_family=10)
    >>> any((r.family, r.input) in heldout_inputs() for r in records)
    False
    """
    records = training_records(seed, facts_per_family=10_000)
    seen, banned = {(r.family, r.input) for r in records}, heldout_inputs(seed)
    rng = random.Random(f"teacher-records-{seed}")
    for family in (f for f in data.TRAINED_PHRASINGS if f in data.RULES):
        added = 0
        for _ in range(per_family * 20):  # single-word families run out of new words first
            vocabulary = pseudo_words() if rng.random() < pseudo else TEACHER_VOCABULARY
            r = rule_record(family, data.TRAINED_PHRASINGS[family], rng, vocabulary)
            if (family, r.input) not in seen and (family, r.input) not in banned:
                seen.add((family, r.input))
                records.append(r)
                added += 1
                if added == per_family:
                    break
    return records


def teacher_tasks(seed: int = 0, per_family: int = 800, pseudo: float = 0.7) -> list[Instruction]:
    """The teacher's instruction data: every `teacher_records` record, worded with a randomly
    chosen trained or teacher-only phrasing."""
    rng = random.Random(f"teacher-{seed}")
    return [Instruction(r.family, rng.choice([r.instruction] + data.TEACHER_PHRASINGS[r.family]), r.input, r.output)
            for r in teacher_records(seed, per_family, pseudo)]


def teacher_task(seed: int = 0) -> dict[str, list[Example]]:
    """`teacher_tasks` in the instruction template (5,612 examples: far more inputs, mostly made-up words, and
    more wordings than the live recipe's 692), with `instruct.instruct_task`'s val and test: study 09_instruct
    trains on it for as many steps as on the live recipe, to tell more data from more training.

    >>> {k: len(v) for k, v in teacher_task().items()}
    {'train': 5612, 'val': 188, 'test': 240}
    """
    return {"train": to_examples(teacher_tasks(seed)), **{s: v for s, v in instruct_task(seed).items() if s != "train"}}


def teacher_examples(tasks: Sequence[Instruction], shots: int = 1, seed: int = 0,
                     max_bytes: int = 192) -> list[Example]:
    """Task-writing examples: `shots` tasks, then one more as the target (instruction, input and
    output: writing a task includes answering it)."""
    rng = random.Random(f"teacher-examples-{seed}")
    writing = []
    for task in tasks:
        example = Example(writing_prompt(rng.sample(tasks, shots)), format_task(task)[len("Task:"):])
        if len(example.text.encode()) <= max_bytes:  # short enough for the context with room to spare
            writing.append(example)
    return writing


@dataclass(frozen=True)
class Recipe:
    """How the shipped teacher (peftlab/checkpoints/teacher.*) is made: the one place its numbers live.

    >>> RECIPE.steps, replace(RECIPE, steps=10).steps
    (4500, 10)
    """

    steps: int = 4500
    lr: float = 1.5e-3
    batch_size: int = 8
    warmup_steps: int = 100
    schedule: str = "cosine"
    per_family: int = 800  # new rule records per family, on top of training_records
    pseudo: float = 0.7  # share of them whose words are made up (pseudo_words)
    shots: int = 1  # tasks shown before the one to write, in the task-writing examples
    seed: int = 0


RECIPE = Recipe()


def train_teacher(base: torch.nn.Module, recipe: Recipe = RECIPE,
                  on_step: Callable[[int, float], None] | None = None) -> torch.nn.Module:
    """A copy of `base` fine-tuned (seeded) on `teacher_tasks` twice over: as instructions in the
    instruction template, and as task-writing examples.

    >>> from peftlab.model import ModelConfig, Transformer
    >>> tiny = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> teacher = train_teacher(tiny, replace(RECIPE, steps=1, batch_size=2, per_family=2))
    >>> teacher is tiny
    False
    """
    teacher = copy.deepcopy(base)
    tasks = teacher_tasks(recipe.seed, recipe.per_family, recipe.pseudo)
    examples = to_examples(tasks, DEFAULT_TEMPLATE) + teacher_examples(tasks, recipe.shots, recipe.seed)
    train(teacher, fixed_width_batches(examples, recipe.batch_size, seed=recipe.seed), steps=recipe.steps,
          lr=recipe.lr, warmup_steps=recipe.warmup_steps, schedule=recipe.schedule, seed=recipe.seed,
          progress=False, on_step=on_step)
    return teacher


def teacher_metrics(teacher: torch.nn.Module, seed: int = 0) -> dict:
    """What the teacher's manifest pins: exact match on the held-out words of `instruct.instruct_sets` (240
    records, 40 per family, words of 4 to 9 letters no training set holds), per family and in the new
    wordings; the constant-answer floor of its own training data on those records; and the funnel of a
    default `self_instruct` run."""
    sets = instruct_sets(seed)
    by_family: dict[str, list[Example]] = {}
    for e in sets["test"]:
        by_family.setdefault(e.meta["family"], []).append(e)
    funnel = self_instruct(teacher, seed_tasks(seed=seed), seed=seed).funnel()
    return {"new_inputs_exact_match": round(greedy_accuracy(teacher, sets["test"]), 4),
            "new_inputs_per_family": {f: round(greedy_accuracy(teacher, ex), 4) for f, ex in sorted(by_family.items())},
            "new_inputs_per_family_n": len(sets["test"]),
            "new_wordings_exact_match": round(greedy_accuracy(teacher, sets["wordings"]), 4),
            "constant_answer_exact_match": round(constant_accuracy(to_examples(teacher_tasks(seed)), sets["test"]), 4),
            "self_instruct_funnel": funnel}


def remeasure(name: str = "teacher", directory: Path = CHECKPOINT_DIR) -> dict:
    """Measure the shipped teacher again with today's `teacher_metrics` and write them into its manifest,
    atomically; the weights and everything else in the manifest stay as they are. Returns the metrics.
    `python -m peftlab.teacher --measure`."""
    info = manifest(name, directory)
    info["metrics"] = teacher_metrics(load_base(name, directory=directory), info["teacher"]["seed"])
    path = Path(directory) / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, path)
    return info["metrics"]


def ship_teacher(teacher: torch.nn.Module, recipe: Recipe, wall_time_s: float, name: str = "teacher",
                 directory: Path = CHECKPOINT_DIR) -> torch.nn.Module:
    """Save `teacher` as a peftlab checkpoint, then measure the saved (fp16-stored) weights and
    write the metrics into its manifest; returns the model as `load_base(name)` gives it."""
    tasks = teacher_tasks(recipe.seed, recipe.per_family, recipe.pseudo)
    info = {"command": COMMAND,
            "teacher": {**asdict(recipe), "base": "tiny", "wall_time_s": round(wall_time_s, 1),
                        "threads": torch.get_num_threads(), "torch": torch.__version__,
                        "data": f"{len(tasks)} teacher_tasks ({recipe.pseudo:.0%} of the added rule records on "
                                "made-up words; instruction template) + the same tasks as task-writing examples "
                                "(TASK_HEADER, one shot)"}}
    save_checkpoint(teacher, name, info, directory)
    shipped = load_base(name, directory=directory)
    save_checkpoint(shipped, name, {**info, "metrics": teacher_metrics(shipped, recipe.seed)}, directory)
    return shipped


def build_teacher(recipe: Recipe = RECIPE, name: str = "teacher", directory: Path = CHECKPOINT_DIR) -> torch.nn.Module:
    """Train the teacher from `load_base()` with `recipe` and ship it as `name`. About 20 minutes on
    a 2-core CPU; `load_base("teacher")` then loads it with its hash checked."""
    start = time.perf_counter()
    teacher = train_teacher(load_base(), recipe)
    return ship_teacher(teacher, recipe, time.perf_counter() - start, name, directory)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m peftlab.teacher",
                                     description="Train and ship the self-instruct teacher, or report on it.")
    parser.add_argument("--train", action="store_true", help="train with RECIPE and save it (about 20 min)")
    parser.add_argument("--steps", type=int, default=RECIPE.steps)
    parser.add_argument("--measure", action="store_true", help="measure the shipped teacher again (about a minute)")
    args = parser.parse_args()
    if args.train:
        build_teacher(replace(RECIPE, steps=int_at_least(args.steps, "--steps")))
    elif args.measure:
        remeasure()
    print(json.dumps({k: v for k, v in manifest("teacher").items() if k in ("teacher", "metrics")}, indent=2))


if __name__ == "__main__":
    main()
