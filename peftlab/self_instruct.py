"""Self-instruct: a teacher model writes new tasks, filters keep the good ones, a student trains
on them (Wang et al. 2022, "Self-Instruct", arXiv 2212.10560).

The paper's loop, at peftlab's scale:

1. a task pool starts from a few seed tasks (the paper: 175 human-written; here 21, three per
   instruction family);
2. the teacher is prompted with a few tasks from the pool (the paper: 6 seeds + 2 generated; here
   `shots` of them, in TASK_FORMAT) and writes one more task: instruction, input and output;
3. filters, in order, each counted (the funnel):
   * well-formed: parses into the three fields, instruction and output non-empty, lengths bounded;
   * novel: ROUGE-L (peftlab.rouge) of the instruction against every instruction already in the
     pool below `threshold` (the paper: 0.7). An instruction identical to a pooled one is a new
     *instance* of it (the paper generates several instances per instruction) and is kept when
     its input is new; a near-duplicate (ROUGE-L >= threshold, not identical) is dropped;
   * correct: where the instruction's family has a rule (reverse, uppercase, count, sort, repeat,
     first_letters; fact_qa against the world) the output must equal the rule's, and a task no
     rule can check is dropped as unverifiable (`require_rule=False` keeps it unchecked). The
     paper has no such check; a rule is available here because the tasks come from known families;
4. kept tasks join the pool and can appear as shots for the next generations.

The teacher is the base model instruction-tuned for far longer on far more data than the students
(`teacher_tasks`: more inputs per family, most of them made-up words so the operations must be learned
rather than memorised, never a held-out one, and several wordings), both in the instruction template and
in TASK_FORMAT, so it has learned to answer tasks and to write them. It ships as a checkpoint like
the base model: `python -m peftlab.self_instruct --train-teacher` trains it with TEACHER_RECIPE and
fixed seeds, and `load_base("teacher")` loads it with its hash checked.
The student starts from the base model.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from . import data
from .data import Example, Instruction
from .checkpoint import load_base, manifest, save_checkpoint
from .instruct import (DEFAULT_TEMPLATE, PARAPHRASES, RULES, TRAINED_PHRASINGS, evaluate, fixed_width_batches,
                       heldout_suite, rule_record, to_examples, training_records)
from .rouge import rouge_l
from .tokenizer import EOS, ByteTokenizer
from .train import complete, train

TASK_HEADER = "Write a new task.\n"
TASK_FORMAT = "Task: {instruction}\nInput: {input}\nOutput: {output}\n"
# Other wordings the teacher learns to write, so it has instructions to invent; they differ from
# the held-out PARAPHRASES of peftlab.instruct, which stay unseen by every model.
TEACHER_PHRASINGS = {
    "reverse": ["Write the word in reverse.", "Flip the order of the letters."],
    "uppercase": ["Make every letter of the text a capital.", "Convert the text to uppercase."],
    "count": ["Give the number of letters in the word.", "Tell how long the word is."],
    "sort": ["Order the words from A to Z.", "Arrange the words alphabetically."],
    "repeat": ["Write the word three times.", "Copy the word three times."],
    "first_letters": ["Take the initial of each word.", "Join the first letters of the words."],
    "fact_qa": ["Answer this question.", "Reply to the question about a person."],
}
FUNNEL_STAGES = ("generated", "well-formed", "novel", "correct")
_TASK = re.compile(r"^Task: (?P<instruction>[^\n]*)\nInput: (?P<input>[^\n]*)\nOutput: (?P<output>[^\n]*)\n?$")
# "Where does {n} live?" -> a regex that captures the name
_QUESTIONS = {a: re.compile("^" + re.escape(q).replace(re.escape("{n}"), r"(\w+)") + "$")
              for a, q in data.QUESTIONS.items()}


def format_task(task: Instruction) -> str:
    """One task in the task-writing format.

    >>> format_task(Instruction("count", "Count the letters in the word.", "river", "5"))
    'Task: Count the letters in the word.\\nInput: river\\nOutput: 5\\n'
    """
    return TASK_FORMAT.format(instruction=task.instruction, input=task.input, output=task.output)


def writing_prompt(shots: Sequence[Instruction]) -> str:
    """The few-shot prompt that asks for one more task; the teacher continues after "Task:"."""
    return TASK_HEADER + "".join(format_task(t) for t in shots) + "Task:"


def family_of(instruction: str) -> str | None:
    """The family whose known wording is closest by ROUGE-L (at least 0.6), else None.

    >>> family_of("Reverse the letters of this word."), family_of("Paint the house.")
    ('reverse', None)
    """
    wordings = [(f, w) for f, ws in TEACHER_PHRASINGS.items() for w in ws]
    wordings += list(TRAINED_PHRASINGS.items()) + list(PARAPHRASES.items())
    score, family = max((rouge_l(w, instruction), f) for f, w in wordings)
    return family if score >= 0.6 else None


def rule_output(family: str | None, input: str) -> str | None:
    """What the output must be, by the family's rule (fact_qa: the world's answer); None if no rule applies."""
    if family in RULES and input:
        return RULES[family](input)
    if family == "fact_qa":
        people = {p.name: p for p in data.world()}
        for attribute, pattern in _QUESTIONS.items():
            m = pattern.match(input)
            if m and m.group(1) in people:
                return getattr(people[m.group(1)], attribute)
    return None


def check_threshold(threshold: float) -> None:
    if not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"threshold (ROUGE-L) must be in (0, 1], got {threshold!r}")


def check_tokenizers(teacher: torch.nn.Module, student: torch.nn.Module) -> None:
    """The teacher's text is fed to the student as token ids, so both must share one tokenizer:
    same vocabulary size and same special ids (PAD, BOS, EOS)."""
    def signature(model):
        tok = getattr(model, "tokenizer", ByteTokenizer())
        return {"vocab_size": model.config.vocab_size, "pad_id": tok.pad_id, "bos_id": tok.bos_id, "eos_id": tok.eos_id}
    t, s = signature(teacher), signature(student)
    if t != s:
        raise ValueError(f"teacher and student tokenizers differ: teacher {t}, student {s}; "
                         "the teacher must use the student's tokenizer")


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
    made-up ones it has to learn the operation, which then applies to held-out real words too
    (held-out repeat and first_letters: 0% for a teacher trained on real words only, 56% with
    made-up ones; reverse stays at 0%).
    """
    return tuple(sorted({pseudo_word(random.Random(f"pseudo-{i}")) for i in range(5000)} - set(TEACHER_VOCABULARY)))


def heldout_inputs(seed: int = 0) -> set[tuple[str, str]]:
    """(family, input) pairs of the rule families in the val and test splits of `data.instructions`:
    every held-out "new input" a model is evaluated on comes from them, so no training set may
    contain one. (Held-out facts are about the Q/A test people instead, see `instruct.heldout_suite`.)"""
    split = data.instructions(seed)
    return {(r.family, r.input) for r in split["val"] + split["test"] if r.family in RULES}


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
    for family in (f for f in TRAINED_PHRASINGS if f in RULES):
        added = 0
        for _ in range(per_family * 20):  # single-word families run out of new words first
            vocabulary = pseudo_words() if rng.random() < pseudo else TEACHER_VOCABULARY
            r = rule_record(family, TRAINED_PHRASINGS[family], rng, vocabulary)
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
    return [Instruction(r.family, rng.choice([r.instruction] + TEACHER_PHRASINGS[r.family]), r.input, r.output)
            for r in teacher_records(seed, per_family, pseudo)]


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


# How the shipped teacher (peftlab/checkpoints/teacher.*) is made: `python -m peftlab.self_instruct --train-teacher`.
TEACHER_RECIPE = {"steps": 4500, "lr": 1.5e-3, "batch_size": 8, "warmup_steps": 100, "schedule": "cosine",
                  "per_family": 800, "pseudo": 0.7, "shots": 1, "seed": 0}


def train_teacher(base: torch.nn.Module, steps: int = 4500, lr: float = 1.5e-3, batch_size: int = 8,
                  warmup_steps: int = 100, schedule: str = "cosine", per_family: int = 800, pseudo: float = 0.7,
                  shots: int = 1, seed: int = 0,
                  on_step: Callable[[int, float], None] | None = None) -> torch.nn.Module:
    """A copy of `base` fine-tuned (seeded) on `teacher_tasks` twice over: as instructions in the
    instruction template, and as task-writing examples. The defaults are TEACHER_RECIPE.

    >>> from peftlab import load_base
    >>> teacher = train_teacher(load_base(), steps=1, batch_size=2, per_family=2)
    """
    teacher = copy.deepcopy(base)
    tasks = teacher_tasks(seed, per_family, pseudo)
    examples = to_examples(tasks, DEFAULT_TEMPLATE) + teacher_examples(tasks, shots, seed)
    train(teacher, fixed_width_batches(examples, batch_size, seed=seed), steps=steps, lr=lr,
          warmup_steps=warmup_steps, schedule=schedule, seed=seed, progress=False, on_step=on_step)
    return teacher


def teacher_metrics(teacher: torch.nn.Module, seed: int = 0) -> dict:
    """What the teacher's manifest pins: exact match per family on held-out new inputs (16 per
    family, the instruction template) and the funnel of a default `self_instruct` run."""
    suite = heldout_suite(seed, per_family=16)
    scores, phrasings = evaluate(teacher, suite["new inputs"]), evaluate(teacher, suite["new phrasings"])
    funnel = self_instruct(teacher, seed_tasks(seed=seed), seed=seed).funnel()
    return {"new_inputs_exact_match": round(scores["exact_match"], 4),
            "new_inputs_per_family": {f: round(v, 4) for f, v in scores["per_family"].items()},
            "new_inputs_per_family_n": len(suite["new inputs"]),
            "new_phrasings_exact_match": round(phrasings["exact_match"], 4), "self_instruct_funnel": funnel}


def ship_teacher(teacher: torch.nn.Module, recipe: dict, wall_time_s: float, name: str = "teacher") -> torch.nn.Module:
    """Save `teacher` as a peftlab checkpoint, then measure the saved (fp16-stored) weights and
    write the metrics into its manifest; returns the model as `load_base(name)` gives it."""
    tasks = teacher_tasks(recipe["seed"], recipe["per_family"], recipe["pseudo"])
    info = {"command": "python -m peftlab.self_instruct --train-teacher",
            "teacher": {**recipe, "base": "tiny", "wall_time_s": round(wall_time_s, 1),
                        "threads": torch.get_num_threads(), "torch": torch.__version__,
                        "data": f"{len(tasks)} teacher_tasks ({recipe['pseudo']:.0%} of the added rule records on "
                                "made-up words; instruction template) + the same tasks as task-writing examples "
                                "(TASK_HEADER, one shot)"}}
    save_checkpoint(teacher, name, info)
    shipped = load_base(name)
    save_checkpoint(shipped, name, {**info, "metrics": teacher_metrics(shipped, recipe["seed"])})
    return shipped


def build_teacher(name: str = "teacher", **overrides) -> torch.nn.Module:
    """Train the teacher from `load_base()` with TEACHER_RECIPE (or `overrides`) and ship it as `name`.
    A few minutes on a 2-core CPU; `load_base("teacher")` then loads it with its hash checked."""
    recipe = {**TEACHER_RECIPE, **overrides}
    start = time.perf_counter()
    teacher = train_teacher(load_base(), **{k: v for k, v in recipe.items()})
    return ship_teacher(teacher, recipe, time.perf_counter() - start, name)


def seed_tasks(per_family: int = 3, seed: int = 0) -> list[Instruction]:
    """The starting pool: the first `per_family` training records of each family (21 tasks)."""
    records = training_records(seed)
    return [r for f in TRAINED_PHRASINGS for r in [x for x in records if x.family == f][:per_family]]


@dataclass
class Generation:
    """One generated text, what it parsed into, and its fate: "kept" or the reason it was dropped."""

    text: str
    task: Instruction | None
    verdict: str
    stage: str  # the last funnel stage it passed


@dataclass
class SelfInstructResult:
    seeds: list[Instruction]
    generations: list[Generation] = field(default_factory=list)

    @property
    def kept(self) -> list[Instruction]:
        return [g.task for g in self.generations if g.verdict == "kept"]

    @property
    def unfiltered(self) -> list[Instruction]:
        """Every generation that parses into (instruction, input, output): trainable, but unchecked."""
        return [g.task for g in self.generations if g.task is not None and g.task.output]

    def funnel(self) -> dict[str, int]:
        """How many generations reached each stage, like the paper's statistics."""
        reached = {s: 0 for s in FUNNEL_STAGES}
        for g in self.generations:
            for s in FUNNEL_STAGES[:FUNNEL_STAGES.index(g.stage) + 1]:
                reached[s] += 1
        return reached


def parse_task(generated: str) -> Instruction | None:
    """A generated continuation of "Task:" as a record (family by `family_of`), or None.

    >>> parse_task(" Count the letters in the word.\\nInput: river\\nOutput: 5\\n").output
    '5'
    """
    m = _TASK.match("Task:" + generated)
    if m is None:
        return None
    instruction, x, y = (m.group(k).strip() for k in ("instruction", "input", "output"))
    return Instruction(family_of(instruction) or "unknown", instruction, x, y)


def judge(task: Instruction | None, pool: Sequence[Instruction], threshold: float = 0.7,
          require_rule: bool = True) -> tuple[str, str]:
    """(stage reached, verdict) for one parsed task against the current pool. With `require_rule`
    a task that no family rule can check is dropped as unverifiable (every family here has a
    rule, so such a task is a garbled one); without it, it is kept unchecked, as in the paper."""
    if task is None:
        return "generated", "malformed: not Task/Input/Output"
    if not task.instruction or not task.output:
        return "generated", "malformed: empty instruction or output"
    if not 8 <= len(task.instruction) <= 80 or len(task.input) > 60 or len(task.output) > 60:
        return "generated", "malformed: length out of bounds"
    instructions = {t.instruction for t in pool}
    if task.instruction in instructions:
        if any(t.instruction == task.instruction and t.input == task.input for t in pool):
            return "well-formed", "duplicate instance (same instruction and input)"
    else:
        score, nearest = max((rouge_l(i, task.instruction), i) for i in instructions)
        if score >= threshold:
            return "well-formed", f"near-duplicate of {nearest!r} (ROUGE-L {score:.2f})"
    expected = rule_output(task.family, task.input)
    if expected is None and require_rule:
        return "novel", "unverifiable: no family rule matches the instruction"
    if expected is not None and task.output != expected:
        return "novel", f"wrong output for {task.family} (rule says {expected!r})"
    return "correct", "kept"


def self_instruct(teacher: torch.nn.Module, seeds: Sequence[Instruction], n: int = 128, batch_size: int = 32,
                  shots: int = 1, threshold: float = 0.7, temperature: float = 0.7, top_k: int | None = 20,
                  max_new_tokens: int = 96, seed: int = 0, student: torch.nn.Module | None = None,
                  require_rule: bool = True, greedy_output: bool = True) -> SelfInstructResult:
    """Run the loop: `n` generations in batches of `batch_size` (one few-shot prompt per batch,
    sampled rows), each judged against the pool as it grows. With `greedy_output` the instruction
    and input stay sampled (diversity) but the output is decoded again greedily from "Output:"
    (the teacher's best answer, not a sample of it), as the paper generates instances in a step
    of their own.

    >>> from peftlab import load_base
    >>> r = self_instruct(load_base(), seed_tasks(), n=2, batch_size=2, max_new_tokens=8)
    >>> r.funnel()["generated"]
    2
    """
    check_threshold(threshold)
    if student is not None:
        check_tokenizers(teacher, student)
    if not seeds:
        raise ValueError("seeds is empty: the pool needs at least one seed task")
    if n < 1 or batch_size < 1 or shots < 1:
        raise ValueError(f"n, batch_size and shots must be >= 1, got {n}, {batch_size}, {shots}")
    if shots > len(seeds):
        raise ValueError(f"shots must be <= the number of seeds ({len(seeds)}), got {shots}")
    tok, rng = ByteTokenizer(), random.Random(f"self-instruct-{seed}")
    device = next(teacher.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    result, pool = SelfInstructResult(list(seeds)), list(seeds)
    while len(result.generations) < n:
        rows = min(batch_size, n - len(result.generations))
        generated = pool[len(seeds):]
        # as in the paper, the shots are mostly seeds plus a generated task once there is one
        if generated and shots > 1:
            context = rng.sample(list(seeds), shots - 1) + [rng.choice(generated)]
        else:
            context = rng.sample(list(seeds), shots)
        ids = torch.tensor([tok.encode(writing_prompt(context))] * rows, device=device)
        budget = min(max_new_tokens, teacher.config.max_seq_len - ids.shape[1])
        out = teacher.generate(ids, budget, temperature=temperature, top_k=top_k, stop_ids=(EOS,), generator=gen)
        texts = []
        for row in out:
            new = row[ids.shape[1]:].tolist()
            texts.append(tok.decode(new[:new.index(EOS)] if EOS in new else new))
        if greedy_output:
            texts = answer_greedily(teacher, writing_prompt(context), texts)
        for text in texts:
            task = parse_task(text)
            stage, verdict = judge(task, pool, threshold, require_rule)
            result.generations.append(Generation(text, task, verdict, stage))
            if verdict == "kept":
                pool.append(task)
    return result


def answer_greedily(teacher: torch.nn.Module, prompt: str, texts: Sequence[str], max_output: int = 61) -> list[str]:
    """Each sampled task with its output replaced by the teacher's greedy answer: the text up to
    "\nOutput:" is fed back after `prompt` and decoded greedily to the end of the line. Texts
    without an "Output:" line, or too long for the context, stay as they were."""
    marker, heads, rows = "\nOutput:", [], []
    for i, text in enumerate(texts):
        cut = text.find(marker)
        if cut >= 0 and len((prompt + text[:cut]).encode()) + len(marker) + max_output <= teacher.config.max_seq_len:
            heads.append(text[:cut + len(marker)])
            rows.append(i)
    answers = complete(teacher, [prompt + h for h in heads], max_output, stop_ids=(EOS, ord("\n"))) if heads else []
    out = list(texts)
    for i, head, answer in zip(rows, heads, answers):
        out[i] = head + answer.split("\n")[0] + "\n"
    return out


def refilter(result: SelfInstructResult, threshold: float, require_rule: bool = True) -> SelfInstructResult:
    """The same generations judged again, in order, with another ROUGE-L threshold (the shots the
    teacher saw stay as they were, so this is a what-if on the filter, not a new run).

    >>> r = SelfInstructResult(seed_tasks(), [Generation(" x", None, "malformed", "generated")])
    >>> refilter(r, 0.5).funnel()["generated"]
    1
    """
    check_threshold(threshold)
    out, pool = SelfInstructResult(list(result.seeds)), list(result.seeds)
    for g in result.generations:
        stage, verdict = judge(g.task, pool, threshold, require_rule)
        out.generations.append(Generation(g.text, g.task, verdict, stage))
        if verdict == "kept":
            pool.append(g.task)
    return out


def plot_funnel(counts: dict[str, int], title: str) -> None:
    """The funnel as horizontal bars, first stage on top, each labelled with its count."""
    import matplotlib.pyplot as plt
    stages, values = list(counts)[::-1], list(counts.values())[::-1]
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.barh(stages, values, color="#4c72b0")
    for y, v in enumerate(values):
        ax.text(v, y, f" {v}", va="center")
    ax.set_xlabel("generations")
    ax.set_title(title)
    plt.tight_layout()
    plt.show()


class FunnelExplorer:
    """Move the ROUGE-L threshold and watch how many generations each filter keeps.

    >>> ex = FunnelExplorer(SelfInstructResult(seed_tasks()))
    >>> ex.funnel(0.7)
    {'generated': 0, 'well-formed': 0, 'novel': 0, 'correct': 0}
    """

    def __init__(self, result: SelfInstructResult):
        import ipywidgets as W
        self.result = result
        self.threshold = W.FloatSlider(value=0.7, min=0.05, max=1.0, step=0.05, description="ROUGE-L <")
        self.plot = W.Output()
        self.threshold.observe(self.update, names="value")
        self.widget = W.VBox([self.threshold, self.plot])

    def funnel(self, threshold: float) -> dict[str, int]:
        return refilter(self.result, threshold).funnel()

    def update(self, _=None) -> dict[str, int]:
        counts = self.funnel(self.threshold.value)
        with self.plot:
            self.plot.clear_output(wait=True)
            plot_funnel(counts, f"funnel at ROUGE-L threshold {self.threshold.value:.2f}")
        return counts

    def show(self) -> None:
        from IPython.display import display
        display(self.widget)
        self.update()


def train_students(base: torch.nn.Module, datasets: dict[str, Sequence[Instruction]], steps: int = 60,
                   lr: float = 2e-3, batch_size: int = 8, seed: int = 0) -> dict[str, torch.nn.Module]:
    """One copy of `base` per dataset, each trained the same way (steps, lr, batch, seed)."""
    students = {}
    for name, tasks in datasets.items():
        if not tasks:
            raise ValueError(f"dataset {name!r} is empty")
        students[name] = copy.deepcopy(base)
        batches = fixed_width_batches(to_examples(tasks, DEFAULT_TEMPLATE), batch_size, seed=seed)
        train(students[name], batches, steps=steps, lr=lr, seed=seed, progress=False)
    return students


def compare_students(students: dict[str, torch.nn.Module], heldout: Sequence[Instruction]) -> dict[str, dict]:
    """`instruct.evaluate` of every student on the same held-out records."""
    return {name: evaluate(model, heldout) for name, model in students.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description="Train and ship the self-instruct teacher, or report on it.")
    parser.add_argument("--train-teacher", action="store_true", help="train with TEACHER_RECIPE and save it")
    parser.add_argument("--steps", type=int, default=TEACHER_RECIPE["steps"])
    args = parser.parse_args()
    if args.train_teacher:
        build_teacher(steps=args.steps)
    print(json.dumps({k: v for k, v in manifest("teacher").items() if k in ("teacher", "metrics")}, indent=2))


if __name__ == "__main__":
    main()
