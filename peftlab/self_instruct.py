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

The teacher is the base model instruction-tuned for far longer on far more data than the students,
both in the instruction template and in TASK_FORMAT, so it has learned to answer tasks and to write
them. How it is made is `peftlab.teacher` (`python -m peftlab.teacher`); it ships as a checkpoint
like the base model, and `load_base("teacher")` loads it with its hash checked.
The student starts from the base model.
"""

from __future__ import annotations

import copy
import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from . import data
from .data import Instruction
from .instruct import (DEFAULT_TEMPLATE, PARAPHRASES, RULES, TRAINED_PHRASINGS, evaluate, fixed_width_batches,
                       instruct_task, to_examples, training_records)
from .rouge import rouge_l
from .tokenizer import EOS, ByteTokenizer
from .evaluate import complete
from .train import train

TASK_HEADER = "Write a new task.\n"
TASK_FORMAT = "Task: {instruction}\nInput: {input}\nOutput: {output}\n"
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
    wordings = [(f, w) for f, ws in data.TEACHER_PHRASINGS.items() for w in ws]
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


def seed_tasks(per_family: int = 3, seed: int = 0) -> list[Instruction]:
    """The starting pool: `per_family` training records of each family (21 tasks), the first ones whose
    inputs differ in length, so the seeds of `count` do not all share one answer.

    >>> sorted(t.output for t in seed_tasks() if t.family == "count")
    ['5', '6', '7']
    """
    out = []
    for family in TRAINED_PHRASINGS:
        lengths: set[int] = set()
        for r in (x for x in training_records(seed) if x.family == family):
            if len(r.input) not in lengths and len(lengths) < per_family:
                lengths.add(len(r.input))
                out.append(r)
    return out


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
          require_rule: bool = True, novelty: bool = True, correctness: bool = True) -> tuple[str, str]:
    """(stage reached, verdict) for one parsed task against the current pool. With `require_rule`
    a task that no family rule can check is dropped as unverifiable (every family here has a
    rule, so such a task is a garbled one); without it, it is kept unchecked, as in the paper.
    `novelty=False` and `correctness=False` switch a filter off (the ablations of notebook 19): the
    task passes that stage unchecked."""
    if task is None:
        return "generated", "malformed: not Task/Input/Output"
    if not task.instruction or not task.output:
        return "generated", "malformed: empty instruction or output"
    if not 8 <= len(task.instruction) <= 80 or len(task.input) > 60 or len(task.output) > 60:
        return "generated", "malformed: length out of bounds"
    instructions = {t.instruction for t in pool}
    if not novelty:
        pass
    elif task.instruction in instructions:
        if any(t.instruction == task.instruction and t.input == task.input for t in pool):
            return "well-formed", "duplicate instance (same instruction and input)"
    else:
        score, nearest = max((rouge_l(i, task.instruction), i) for i in instructions)
        if score >= threshold:
            return "well-formed", f"near-duplicate of {nearest!r} (ROUGE-L {score:.2f})"
    if not correctness:
        return "correct", "kept"
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


def refilter(result: SelfInstructResult, threshold: float = 0.7, require_rule: bool = True, novelty: bool = True,
             correctness: bool = True) -> SelfInstructResult:
    """The same generations judged again, in order, with another ROUGE-L threshold or a filter off (`judge`).
    The shots the teacher saw stay as they were; with one shot they are always seeds, never generated
    tasks, so the generations would be the same in a new run and this is exact, not a what-if.

    >>> r = SelfInstructResult(seed_tasks(), [Generation(" x", None, "malformed", "generated")])
    >>> refilter(r, 0.5).funnel()["generated"]
    1
    """
    check_threshold(threshold)
    out, pool = SelfInstructResult(list(result.seeds)), list(result.seeds)
    for g in result.generations:
        stage, verdict = judge(g.task, pool, threshold, require_rule, novelty, correctness)
        out.generations.append(Generation(g.text, g.task, verdict, stage))
        if verdict == "kept":
            pool.append(g.task)
    return out


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


def nearest_seed(tasks: Sequence[Instruction], seeds: Sequence[Instruction]) -> list[float]:
    """Per task, ROUGE-L of its instruction to the nearest seed instruction: the paper's measure of how far
    generated instructions move from the seeds (Wang et al. 2022, Figure 4).

    >>> nearest_seed([Instruction("x", "Echo it thrice.", "a", "a a a")], seed_tasks())
    [0.0]
    """
    return [max(rouge_l(s.instruction, t.instruction) for s in seeds) for t in tasks]


# Words that are not the object noun of an instruction (determiners, pronouns, prepositions, adjectives of ours).
_NOT_NOUNS = {"the", "a", "an", "of", "each", "every", "in", "to", "this", "these", "it", "its", "all", "from",
              "into", "about", "three", "two", "first", "last", "small", "upper", "given", "following", "order",
              "how", "many", "long", "is", "does", "what"}


def verb_noun(instruction: str) -> tuple[str, str | None]:
    """(root verb, its first object noun) of an imperative instruction, by a rule: the first word is the
    verb, the first later word that is not a function word (`_NOT_NOUNS`) is the noun. The paper parses
    instructions with a constituency parser (Figure 3); this rule serves instructions of our few families.

    >>> verb_noun("Reverse the letters of the word."), verb_noun("Echo it thrice.")
    (('reverse', 'letters'), ('echo', 'thrice'))
    """
    words = re.findall(r"[a-z]+", instruction.lower())
    if not words:
        raise ValueError(f"instruction must hold at least one word, got {instruction!r}")
    return words[0], next((w for w in words[1:] if w not in _NOT_NOUNS), None)


STUDY_GENERATIONS = 256
# The students of study 19_self_instruct, by training set: the seeds alone, or the seeds plus the generations
# that pass every filter, or pass with one filter switched off (`refilter`'s options).
STUDENTS = {"seeds": None, "filtered": {}, "no_novelty": {"novelty": False}, "no_correct": {"correctness": False}}


@functools.cache
def study_pool(seed: int = 0) -> SelfInstructResult:
    """The generations study 19_self_instruct's students learn from: the shipped teacher, `seed_tasks`, one
    shot, `STUDY_GENERATIONS` generations in batches of 32, seeded; the first 128 are those of notebook 19's
    live run. Made on the CPU (about a minute), once per process."""
    from .checkpoint import load_base
    return self_instruct(load_base("teacher"), seed_tasks(seed=seed), n=STUDY_GENERATIONS, batch_size=32, seed=seed)


def student_tasks(name: str, seed: int = 0) -> list[Instruction]:
    """The training tasks of one student of `STUDENTS`."""
    if name not in STUDENTS:
        raise ValueError(f"name must be one of {list(STUDENTS)}, got {name!r}")
    seeds = seed_tasks(seed=seed)
    return seeds if STUDENTS[name] is None else seeds + refilter(study_pool(seed), **STUDENTS[name]).kept


def student_task(name: str, seed: int = 0) -> dict[str, list]:
    """One student's training set, with `instruct.instruct_task`'s val and test (held-out words): a study task."""
    return {"train": to_examples(student_tasks(name, seed)),
            **{s: v for s, v in instruct_task(seed).items() if s != "train"}}
