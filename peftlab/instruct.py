"""Instruction tuning: (instruction, input, response) records in one template, trained with the
loss on the response, and evaluated on instructions the model never saw.

One `Template` formats the prompt for training and for generation alike:

    Instruction: {instruction}
    Input: {input}            <- this line is dropped when the record has no input
    Response: {response}

A training example is prompt + response + TERMINATOR ("\\n", then the EOS token that
`peftlab.train` appends to every response); generation feeds the same prompt and stops at the
terminator. With `train(..., loss_on="response")` the prompt tokens carry no loss (labels -100),
as in FLAN (Wei et al. 2021, arXiv 2109.01652) and Alpaca; `loss_on="all"` is the ablation.

The held-out suite separates what can transfer from what cannot at this scale: new inputs to a
trained instruction, new phrasings of a trained instruction, new instruction families phrased
like the trained ones, and questions about people whose facts the base model read in
pre-training but never saw as instructions (the person split of `data.qa_task`).
"""

from __future__ import annotations

import functools
import random
import re
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import data
from .data import Example, Instruction
from .tokenizer import EOS, ByteTokenizer
from .evaluate import check_examples, complete, evaluate_loss
from .rouge import max_rouge_l
from .train import IGNORE, Batch, example_batches

TERMINATOR = "\n"
SLOTS = ("instruction", "input", "response")


@dataclass(frozen=True)
class Template:
    """A prompt template with `{instruction}`, an optional `{input}` line, and `{response}` last.

    >>> t = Template("Instruction: {instruction}\\nInput: {input}\\nResponse: {response}")
    >>> t.prompt("Reverse the letters of the word.", "apple")
    'Instruction: Reverse the letters of the word.\\nInput: apple\\nResponse: '
    >>> t.prompt("Name a color.")
    'Instruction: Name a color.\\nResponse: '
    """

    text: str

    def __post_init__(self) -> None:
        fields = [f for _, f, _, _ in string.Formatter().parse(self.text) if f is not None]
        unknown = sorted(set(fields) - set(SLOTS))
        if unknown:
            raise ValueError(f"template has unknown slots {unknown}; allowed slots are {SLOTS}")
        if fields.count("response") != 1 or not self.text.endswith("{response}"):
            raise ValueError("template must end with exactly one {response} slot (the generation starts there), "
                             f"got {self.text!r}")
        if fields.count("instruction") != 1:
            raise ValueError(f"template must contain exactly one {{instruction}} slot, got {self.text!r}")
        if fields.count("input") > 1:
            raise ValueError(f"template may contain at most one {{input}} slot, got {self.text!r}")

    def prompt(self, instruction: str, input: str = "") -> str:
        """The text before the response; the line holding `{input}` is dropped when `input` is empty."""
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
        head = self.text[:-len("{response}")]
        if not input:
            head = "".join(line for line in head.splitlines(keepends=True) if "{input}" not in line)
        # str.replace, not str.format: user text may hold braces
        return head.replace("{instruction}", instruction).replace("{input}", input)

    def example(self, record: Instruction) -> Example:
        """The training example: prompt, then the output and the terminator (the target)."""
        if not record.output or TERMINATOR in record.output:
            raise ValueError(f"record output must be non-empty and free of {TERMINATOR!r}, got {record.output!r}")
        return Example(self.prompt(record.instruction, record.input), record.output + TERMINATOR,
                       {"family": record.family})


DEFAULT_TEMPLATE = Template("Instruction: {instruction}\nInput: {input}\nResponse: {response}")


def to_examples(records: Sequence[Instruction], template: Template = DEFAULT_TEMPLATE) -> list[Example]:
    """Records in the template, ready for `peftlab.train.train`.

    >>> to_examples([Instruction("count", "Count the letters in the word.", "river", "5")])[0].response
    '5\\n'
    """
    return [template.example(r) for r in records]


def fixed_width_batches(examples: Sequence[Example], batch_size: int, loss_on: str = "response", seed: int = 0,
                        multiple: int = 32, max_width: int = 256) -> Iterator[Batch]:
    """`peftlab.train.example_batches`, each batch right-padded to a multiple of `multiple` tokens.

    Why: on CPU every new (batch, width) shape costs the first step that meets it up to a few
    seconds; padding to a few widths removes those stalls. Padding carries no loss, so the
    gradient is the same; widths stop at `max_width` (the model's context). Pass the iterator as
    `train(model, batches, ...)`.

    >>> ids, labels = next(fixed_width_batches(to_examples(training_records()[:4]), 2))
    >>> ids.shape[1] % 32
    0
    """
    for ids, labels in example_batches(examples, batch_size, loss_on, seed):
        pad = min(-ids.shape[1] % multiple, max(0, max_width - ids.shape[1]))
        yield F.pad(ids, (0, pad), value=ByteTokenizer.pad_id), F.pad(labels, (0, pad), value=IGNORE)


def respond(model: torch.nn.Module, requests: Sequence[Instruction | tuple[str, str]],
            template: Template = DEFAULT_TEMPLATE, max_new_tokens: int = 48) -> list[str]:
    """Greedy answers, generated from the same prompt as in training and cut at the terminator.

    >>> from peftlab import load_base
    >>> len(respond(load_base(), [("Reverse the letters of the word.", "apple")], max_new_tokens=4))
    1
    """
    pairs = [(r.instruction, r.input) if isinstance(r, Instruction) else tuple(r) for r in requests]
    prompts = [template.prompt(i, x) for i, x in pairs]
    longest = max(len(p.encode()) for p in prompts)
    budget = min(max_new_tokens, model.config.max_seq_len - longest)
    if budget < 1:
        raise ValueError(f"a prompt of {longest} bytes leaves no room to answer in the context of "
                         f"{model.config.max_seq_len} tokens")
    outputs = complete(model, prompts, budget, stop_ids=(EOS, ord(TERMINATOR)))
    return [o.split(TERMINATOR)[0] for o in outputs]


def evaluate(model: torch.nn.Module, records: Sequence[Instruction], template: Template = DEFAULT_TEMPLATE) -> dict:
    """Exact match (the answer, cut at the terminator, equals the output), per family, and the
    mean loss on response tokens.

    >>> from peftlab import load_base
    >>> r = evaluate(load_base(), data.instructions()["test"][:2])
    >>> sorted(r)
    ['exact_match', 'loss', 'per_family', 'predictions']
    """
    if not records:
        raise ValueError("records is empty")
    # an answer longer than the longest output is wrong anyway: generate no further than that
    predictions = respond(model, records, template, max(len(r.output.encode()) for r in records) + 1)
    hits: dict[str, list[bool]] = {}
    for r, p in zip(records, predictions):
        hits.setdefault(r.family, []).append(p == r.output)
    every = [h for v in hits.values() for h in v]
    return {"exact_match": sum(every) / len(every),
            "per_family": {f: sum(v) / len(v) for f, v in sorted(hits.items())},
            "loss": evaluate_loss(model, to_examples(records, template), loss_on="response"),
            "predictions": predictions}


# Every family's rule: the trained ones (`data.RULES`), and unseen families phrased like them. A
# rule lets the held-out suite compute the right answer and self-instruct check a generated output.
RULES: dict[str, Callable[[str], str]] = {
    **data.RULES,
    "lowercase": str.lower,
    "last_letters": lambda s: "".join(w[-1] for w in s.split()),
    "repeat_twice": lambda s: " ".join([s] * 2),
    "reverse_words": lambda s: " ".join(s.split()[::-1]),
    "count_words": lambda s: str(len(s.split())),
}
TRAINED_PHRASINGS = data.TRAINED_PHRASINGS  # the wording `data.instructions()` uses for each family
# New wordings of the trained families, never used in training.
PARAPHRASES = {
    "reverse": "Spell the word backwards.", "uppercase": "Turn the text into upper case letters.",
    "count": "How many letters does the word have?", "sort": "Put the words in alphabetical order.",
    "repeat": "Say the word three times.", "first_letters": "Give the first letter of every word.",
}
NEW_FAMILIES = {
    "lowercase": "Write the text in small letters.", "last_letters": "Write the last letter of each word.",
    "repeat_twice": "Repeat the word two times.", "reverse_words": "Reverse the order of the words.",
    "count_words": "Count the words in the text.",
}


# Wordings no peftlab model trains on and far from every one that is: ROUGE-L at most 0.2 to the nearest
# trained or teacher wording of any family (`nearest_trained`; PARAPHRASES reach 0.83). Study 09_instruct's
# held-out wordings.
NEW_WORDINGS = {
    "reverse": "Spell it backwards.", "uppercase": "Use only capitals.", "count": "What is its length?",
    "sort": "Alphabetize these.", "repeat": "Echo it thrice.", "first_letters": "Make an acronym from these.",
}
# Real words that no training set of peftlab holds: not in `data.WORDS`, nor in the teacher's vocabulary or
# its made-up words (tests/test_instruct.py checks). Inputs made of them are new to every model, so a right
# answer shows the operation, not a memorised word. Their lengths run from 4 to 9 letters in near-equal
# numbers, so no one count answers more than a sixth of them.
HELDOUT_WORDS = ("nest", "drum", "harp", "vase", "leaf", "wolf", "crab", "eagle", "igloo", "lemon", "mango", "quilt",
                 "koala", "ocean", "guitar", "hammer", "jungle", "kettle", "needle", "oyster", "spider", "dolphin",
                 "glacier", "pumpkin", "sparrow", "trumpet", "biscuit", "compass", "elephant", "mushroom", "notebook",
                 "sandwich", "squirrel", "hedgehog", "butterfly", "crocodile", "telescope", "pineapple", "waterfall",
                 "chocolate")


def nearest_trained(wording: str) -> float:
    """ROUGE-L of `wording` to the nearest wording a peftlab model trains on (`TRAINED_PHRASINGS` and the
    teacher's `data.TEACHER_PHRASINGS`, every family): how new a held-out wording really is.

    >>> nearest_trained("Say the word three times."), nearest_trained("Echo it thrice.")
    (0.8, 0.0)
    """
    trained = [w for f, w in TRAINED_PHRASINGS.items()] + [w for ws in data.TEACHER_PHRASINGS.values() for w in ws]
    return round(max_rouge_l(wording, trained), 3)


def _input_for(family: str, rng: random.Random, vocabulary: Sequence[str] = data.WORDS) -> str:
    words = rng.sample(list(vocabulary), rng.randint(3, 5))
    if family in ("reverse", "count", "repeat", "repeat_twice"):
        return words[0]
    if family == "uppercase":
        return " ".join(words[:2])
    if family == "lowercase":
        return " ".join(words[:2]).upper()
    return " ".join(words)


def rule_record(family: str, instruction: str, rng: random.Random,
                vocabulary: Sequence[str] = data.WORDS) -> Instruction:
    """A record of a rule family with a random input (words drawn from `vocabulary`) and its correct output.

    >>> r = rule_record("reverse", "Reverse the letters of the word.", random.Random(0), ["apple"] * 5)
    >>> r.input, r.output
    ('apple', 'elppa')
    """
    x = _input_for(family, rng, vocabulary)
    return Instruction(family, instruction, x, RULES[family](x))


def fact_record(person: data.Person, attribute: str) -> Instruction:
    """A fact question as an instruction record (the `fact_qa` family)."""
    return Instruction("fact_qa", TRAINED_PHRASINGS["fact_qa"], data.QUESTIONS[attribute].format(n=person.name),
                       getattr(person, attribute))


def _people(split: str, seed: int) -> list[data.Person]:
    names = {e.meta["person"] for e in data.qa_task(seed)[split]}
    return [p for p in data.world(seed) if p.name in names]


def training_records(seed: int = 0, facts_per_family: int = 120) -> list[Instruction]:
    """The instruction-tuning set: `data.instructions()` train split for the six rule families,
    plus fact questions about the Q/A training people only (so the held-out facts stay held out).

    >>> {r.family for r in training_records()} == set(TRAINED_PHRASINGS)
    True
    """
    rules = [r for r in data.instructions(seed)["train"] if r.family != "fact_qa"]
    facts = [fact_record(p, a) for p in _people("train", seed) for a in data.ATTRIBUTES]
    random.Random(f"instruct-facts-{seed}").shuffle(facts)
    return rules + facts[:facts_per_family]


def heldout_suite(seed: int = 0, per_family: int = 8) -> dict[str, list[Instruction]]:
    """Four held-out sets, each `per_family` records per family:

    * "new inputs": trained instruction, inputs never trained on (`data.instructions` val + test);
    * "new phrasings": trained families, instructions worded as in `PARAPHRASES`;
    * "new families": `NEW_FAMILIES`, phrased like the trained instructions, never trained;
    * "held-out facts": fact questions about people never asked about in instruction form.

    >>> sorted(heldout_suite())
    ['held-out facts', 'new families', 'new inputs', 'new phrasings']
    """
    rng = random.Random(f"instruct-heldout-{seed}")
    split = data.instructions(seed)
    seen = {(r.instruction, r.input) for r in split["train"]}
    new_inputs: list[Instruction] = []
    for family in PARAPHRASES:
        pool = [r for r in split["val"] + split["test"] if r.family == family and (r.instruction, r.input) not in seen]
        new_inputs += pool[:per_family]
    phrasings = [Instruction(r.family, PARAPHRASES[r.family], r.input, r.output) for r in new_inputs]
    families = [rule_record(f, text, rng) for f, text in NEW_FAMILIES.items() for _ in range(per_family)]
    facts = [fact_record(p, a) for p in _people("test", seed) for a in data.ATTRIBUTES]
    rng.shuffle(facts)
    return {"new inputs": new_inputs, "new phrasings": phrasings, "new families": families,
            "held-out facts": facts[:per_family * 3]}


def _rule_set(families: dict[str, str], words: Sequence[str], per_family: int, name: str) -> list[Instruction]:
    """`per_family` distinct records of each family (worded as in `families`) on inputs made of `words`."""
    rng, out = random.Random(f"instruct-{name}"), []
    for family, wording in families.items():
        found: dict[str, Instruction] = {}
        for _ in range(per_family * 50):  # a one-word family has len(words) inputs at most
            r = rule_record(family, wording, rng, words)
            found.setdefault(r.input, r)
            if len(found) == per_family:
                break
        out += found.values()
    return out


@functools.cache
def instruct_sets(seed: int = 0) -> dict[str, list[Example]]:
    """Study 09_instruct's data, as examples in `DEFAULT_TEMPLATE` (every held-out input made of `HELDOUT_WORDS`):

    * "train": `training_records` (692: the six rule families on `data.WORDS`, 120 fact questions);
    * "val": what a practitioner validates on, drawn from the training distribution: trained words in
      combinations never trained on (`heldout_suite`'s new inputs, 140) and fact questions about the 12 Q/A
      validation people (48): 188, for the sweep and the plateau;
    * "test": trained wordings on `HELDOUT_WORDS`, 40 per family (240): new inputs, new words;
    * "wordings": the test inputs worded as in `NEW_WORDINGS` (240);
    * "families": `NEW_FAMILIES` on `HELDOUT_WORDS`, 40 each (200);
    * "facts": every fact question about the 48 Q/A test people (192), whose facts only pre-training holds.

    >>> {k: len(v) for k, v in instruct_sets().items()}
    {'train': 692, 'val': 188, 'test': 240, 'wordings': 240, 'families': 200, 'facts': 192}
    """
    rules = {f: TRAINED_PHRASINGS[f] for f in PARAPHRASES}
    test = _rule_set(rules, HELDOUT_WORDS, 40, f"test-{seed}")
    return {"train": to_examples(training_records(seed)),
            "val": to_examples(heldout_suite(seed, per_family=1000)["new inputs"]
                               + [fact_record(p, a) for p in _people("val", seed) for a in data.ATTRIBUTES]),
            "test": to_examples(test),
            "wordings": to_examples([Instruction(r.family, NEW_WORDINGS[r.family], r.input, r.output) for r in test]),
            "families": to_examples(_rule_set(NEW_FAMILIES, HELDOUT_WORDS, 40, f"families-{seed}")),
            "facts": to_examples([fact_record(p, a) for p in _people("test", seed) for a in data.ATTRIBUTES])}


def instruct_task(seed: int = 0) -> dict[str, list[Example]]:
    """The train, val and test splits of `instruct_sets`: the live recipe's data, new inputs held out."""
    sets = instruct_sets(seed)
    return {s: sets[s] for s in ("train", "val", "test")}


# The form of each family's answer, whatever its content: what "follows the format" means here.
FORMATS = {"reverse": r"[a-z]+", "uppercase": r"[A-Z]+( [A-Z]+)*", "count": r"[0-9]+", "sort": r"[a-z]+( [a-z]+)*",
           "repeat": r"[a-z]+ [a-z]+ [a-z]+", "first_letters": r"[a-z]+",
           "fact_qa": "|".join(v for values in data.ATTRIBUTES.values() for v in values)}


def well_formed(family: str, generated: str) -> bool:
    """Does a generated continuation answer in the family's form (`FORMATS`) and then stop at the terminator?
    A right answer is well formed; a well-formed one may be wrong ("6" for a 7-letter word).

    >>> well_formed("count", "6\\n"), well_formed("count", "six\\n"), well_formed("count", "6 and")
    (True, False, False)
    """
    if family not in FORMATS:
        raise ValueError(f"family must be one of {list(FORMATS)}, got {family!r}")
    answer, stop, _ = generated.partition(TERMINATOR)
    return bool(stop) and re.fullmatch(FORMATS[family], answer) is not None


def format_rate(model: torch.nn.Module, examples: Sequence[Example]) -> float:
    """The share of `examples` (prompts in the template, meta["family"] set) whose greedy answer is
    `well_formed`: the format learned, right or wrong.

    >>> from peftlab import load_base
    >>> format_rate(load_base(), instruct_sets()["test"][:4])
    0.0
    """
    check_examples(examples)
    budget = max(len(e.response.encode()) for e in examples) + 1
    generated = complete(model, [e.prompt for e in examples], budget, stop_ids=(EOS, ord(TERMINATOR)))
    return sum(well_formed(e.meta["family"], g) for e, g in zip(examples, generated)) / len(examples)


def constant_answers(train: Sequence[Example]) -> dict[str, str]:
    """Per family, the response most common in `train`: what a model that ignores the input does best.

    >>> constant_answers(to_examples([Instruction("count", "Count.", w, str(len(w))) for w in ("tiger", "zebra", "lion")]))
    {'count': '5\\n'}
    """
    by_family: dict[str, list[str]] = {}
    for e in train:
        by_family.setdefault(e.meta["family"], []).append(e.response)
    return {f: max(sorted(set(rs)), key=rs.count) for f, rs in by_family.items()}


def constant_accuracy(train: Sequence[Example], test: Sequence[Example]) -> float:
    """Exact match on `test` of the constant-answer baseline fitted on `train` (`constant_answers`): the
    floor a trained model must clear before its answers show the operation. A family absent from `train`
    scores 0.

    >>> seen = to_examples([Instruction("count", "Count.", w, str(len(w))) for w in ("tiger", "zebra", "lion")])
    >>> constant_accuracy(seen, to_examples([Instruction("count", "Count.", w, str(len(w))) for w in ("mouse", "ox")]))
    0.5
    """
    check_examples(test, "test")
    answers = constant_answers(train)
    return sum(answers.get(e.meta["family"]) == e.response for e in test) / len(test)
