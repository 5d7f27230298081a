"""A generated world and every corpus peftlab trains on, deterministic and versioned.

Nothing is downloaded. One seed builds a fictional world: people with four facts each
(the town they live in, their job, their pet, their favorite color). From it come

* the pre-training corpus: each fact in several phrasings, plus short stories that use the
  facts. It has no question/answer format in it anywhere;
* task sets for fine-tuning, all from the same world: question answering over the facts
  (split by person, so half of the people are never asked about during fine-tuning),
  instruction families, natural language to SQL, natural language to Python,
  and DNA-like sequences, a domain absent from pre-training.

Same seed, same bytes: `corpus_sha256()` is pinned by a test, and DATA_VERSION changes
whenever the generator does.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from functools import lru_cache

DATA_VERSION = 1
FACT_REPEATS = 3

CITIES = ["Varn", "Ostrel", "Miravale", "Dunmoor", "Kethra", "Solbridge", "Pellmouth", "Tarsk",
          "Elvenhold", "Brisca", "Quorra", "Lunefield", "Harrowgate", "Zenthal", "Corvale", "Ymir"]
JOBS = ["baker", "pilot", "weaver", "farmer", "sailor", "doctor", "painter", "miner",
        "teacher", "potter", "tailor", "hunter", "singer", "smith", "guard", "clerk"]
PETS = ["cat", "dog", "goat", "horse", "parrot", "turtle", "rabbit", "fox",
        "hawk", "lizard", "frog", "mouse"]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white",
          "silver", "gold", "brown", "pink"]
ATTRIBUTES = {"city": CITIES, "job": JOBS, "pet": PETS, "color": COLORS}

# Several phrasings per fact: the first one is also the fact-completion probe.
PHRASINGS = {
    "city": ["{n} lives in {v}.", "{n} has a house in {v}.", "{n} resides in the town of {v}.",
             "In {v} you will find {n}, who lives there."],
    "job": ["{n} works as a {v}.", "{n} is a {v} by trade.", "{n} earns a living as a {v}.",
            "As a {v}, {n} is busy every day."],
    "pet": ["{n} has a pet {v}.", "{n} owns a {v}.", "{n} takes care of a {v} at home.",
            "A {v} lives with {n}."],
    "color": ["{n}'s favorite color is {v}.", "{n} likes the color {v} best.",
              "Of all colors, {n} loves {v} most.", "The color {v} is {n}'s favorite."],
}
QUESTIONS = {"city": "Where does {n} live?", "job": "What does {n} do for a living?",
             "pet": "What pet does {n} have?", "color": "What is {n}'s favorite color?"}
STORIES = [
    "{a} the {a_job} left {a_city} early. On the road {a} met {b}, a {b_job} from {b_city}. "
    "They talked about {a}'s {a_pet} until dark.",
    "Every spring {a} paints the door of the house in {a_city} {a_color}. The {a_pet} watches.",
    "{a} and {b} are old friends. {a} lives in {a_city} and {b} lives in {b_city}, "
    "so they write letters.",
    "At the market in {a_city}, {a} the {a_job} sold a {a_color} scarf to {b}.",
    "When {b} visited {a_city}, {a} showed off the {a_pet} and a {a_color} coat.",
    "{a} is a {a_job}, and {b} is a {b_job}. Once they swapped jobs for a day and both regretted it.",
    "The {b_pet} of {b} ran away to {a_city}, where {a} the {a_job} found it.",
]
SYLLABLES = ["ka", "ro", "vel", "mi", "tor", "ash", "len", "qui", "dar", "sa", "fen", "lo",
             "bri", "nu", "gal", "te", "zor", "pa", "wyn", "ele", "mor", "ri", "hal", "du"]
WORDS = ["apple", "river", "stone", "cloud", "tulip", "garden", "window", "pepper", "lantern",
         "marble", "candle", "forest", "rocket", "pencil", "button", "silver", "harbor", "meadow",
         "violin", "thunder", "basket", "mirror", "planet", "cactus", "dragon", "island", "jacket",
         "ladder", "magnet", "orange", "pillow", "saddle", "tiger", "wagon", "yellow", "zebra",
         "bridge", "copper", "falcon", "ginger"]


@dataclass(frozen=True)
class Person:
    """One person of the world and their four facts.

    >>> world()[0]
    Person(name='Tevel', city='Ostrel', job='singer', pet='goat', color='yellow')
    """

    name: str
    city: str
    job: str
    pet: str
    color: str


@dataclass(frozen=True)
class Example:
    """One fine-tuning example: the model sees `prompt + response`; the response is the target.

    >>> e = Example("Q: Where does Tevel live?\\nA:", " Ostrel\\n")
    >>> e.text
    'Q: Where does Tevel live?\\nA: Ostrel\\n'
    """

    prompt: str
    response: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def text(self) -> str:
        return self.prompt + self.response


@dataclass(frozen=True)
class Instruction:
    """One instruction record: a family, the instruction, an optional input, the output.

    >>> instructions()["train"][0]
    Instruction(family='uppercase', instruction='Write the text in capital letters.', input='harbor window', output='HARBOR WINDOW')
    """

    family: str
    instruction: str
    input: str
    output: str


@lru_cache(maxsize=4)
def world(seed: int = 0, n_people: int = 120) -> tuple[Person, ...]:
    """The fictional world: `n_people` people with unique names and four facts each.

    >>> world()[0].name, len(world())
    ('Tevel', 120)
    """
    rng = random.Random(f"world-{seed}")
    names: list[str] = []
    while len(names) < n_people:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice([2, 2, 3]))).capitalize()
        if name not in names and len(name) <= 9:
            names.append(name)
    return tuple(Person(n, rng.choice(CITIES), rng.choice(JOBS), rng.choice(PETS), rng.choice(COLORS))
                 for n in names)


def facts(people: tuple[Person, ...]) -> list[tuple[Person, str, str]]:
    """Every (person, attribute, value) triple.

    >>> facts(world())[0]
    (Person(name='Tevel', city='Ostrel', job='singer', pet='goat', color='yellow'), 'city', 'Ostrel')
    """
    return [(p, a, getattr(p, a)) for p in people for a in ATTRIBUTES]


def _story(rng: random.Random, people: tuple[Person, ...]) -> str:
    a, b = rng.sample(people, 2)
    slots = {"a": a.name, "b": b.name}
    for key, person in (("a", a), ("b", b)):
        slots.update({f"{key}_{attr}": getattr(person, attr) for attr in ATTRIBUTES})
    return rng.choice(STORIES).format(**slots)


PHRASING_CHOICES = ("all", "one")


@lru_cache(maxsize=4)
def pretraining_corpus(seed: int = 0, phrasings: str = "all") -> dict[str, list[str]]:
    """Documents for pre-training: train holds every fact in every phrasing plus stories;
    val and test hold other stories (new combinations of known facts), never seen in train.

    `phrasings="one"` is the corpus without knowledge augmentation (Allen-Zhu & Li 2023, arXiv 2309.14316):
    each fact in its first phrasing only (the fact-completion probe's), as often as the four phrasings
    together appear in the full corpus, and no stories in train, since a story restates facts in other
    words. Val and test are the same stories.

    >>> {split: len(docs) for split, docs in pretraining_corpus().items()}
    {'train': 6960, 'val': 200, 'test': 200}
    >>> one = pretraining_corpus(phrasings="one")
    >>> len(one["train"]), one["train"].count("Tevel lives in Ostrel."), one["val"] == pretraining_corpus()["val"]
    (5760, 12, True)
    >>> pretraining_corpus(phrasings="two")
    Traceback (most recent call last):
    ...
    ValueError: phrasings must be one of ('all', 'one'), got 'two'
    """
    if phrasings not in PHRASING_CHOICES:
        raise ValueError(f"phrasings must be one of {PHRASING_CHOICES}, got {phrasings!r}")
    people = world(seed)
    rng = random.Random(f"corpus-{seed}")
    fact_docs = [ph.format(n=p.name, v=v) for p, a, v in facts(people) for ph in PHRASINGS[a]]
    stories: list[str] = []
    seen: set[str] = set()
    while len(stories) < 1600:
        s = _story(rng, people)
        if s not in seen:
            seen.add(s)
            stories.append(s)
    # Each fact sentence appears FACT_REPEATS times per epoch: a 3M-parameter model needs many
    # exposures to store 480 facts, and the stories alone would drown them.
    train = fact_docs * FACT_REPEATS + stories[:1200]
    if phrasings == "one":
        n = len(PHRASINGS["city"])  # phrasings per fact (four for every attribute)
        train = [PHRASINGS[a][0].format(n=p.name, v=v) for p, a, v in facts(people)] * (FACT_REPEATS * n)
    rng.shuffle(train)
    return {"train": train, "val": stories[1200:1400], "test": stories[1400:]}


def fact_completion(seed: int = 0) -> list[Example]:
    """Probes of pre-training knowledge: the first phrasing of each fact, cut before the value;
    the greedy continuation must give the value as a whole word ("Tevel lives in" -> " Ostrel").

    >>> facts = fact_completion()
    >>> len(facts), facts[0].prompt, facts[0].response
    (480, 'Tevel lives in', ' Ostrel')
    """
    out = []
    for p, a, v in facts(world(seed)):
        prompt = PHRASINGS[a][0].split("{v}")[0].format(n=p.name).rstrip()
        out.append(Example(prompt, f" {v}", {"person": p.name, "attribute": a}))
    return out


def qa_example(person: Person, attribute: str) -> Example:
    """The question/answer format, absent from pre-training.

    >>> qa_example(world()[0], "city").text
    'Q: Where does Tevel live?\\nA: Ostrel\\n'
    """
    q = QUESTIONS[attribute].format(n=person.name)
    return Example(f"Q: {q}\nA:", f" {getattr(person, attribute)}\n",
                   {"person": person.name, "attribute": attribute})


def qa_task(seed: int = 0) -> dict[str, list[Example]]:
    """Q/A over the facts, split by person: train holds half of the people; val and test hold
    the other half, whose facts never appear in Q/A form during fine-tuning.

    >>> {split: len(v) for split, v in qa_task().items()}  # 4 questions per person, split by person
    {'train': 240, 'val': 48, 'test': 192}
    """
    people = list(world(seed))
    random.Random(f"qa-{seed}").shuffle(people)
    half, val_end = len(people) // 2, len(people) // 2 + len(people) // 10
    groups = {"train": people[:half], "val": people[half:val_end], "test": people[val_end:]}
    return {k: [qa_example(p, a) for p in g for a in ATTRIBUTES] for k, g in groups.items()}


def stranger_qa(n_people: int = 12) -> list[Example]:
    """Q/A about people of another world (seed 1) whom pre-training never mentions: a control.
    Fine-tuning can teach the format, but no amount of format answers these.

    >>> len(stranger_qa()), stranger_qa()[0].prompt
    (48, 'Q: Where does Lennu live?\\nA:')
    """
    known = {p.name for p in world()}
    strangers = [p for p in world(seed=1) if p.name not in known][:n_people]
    return [qa_example(p, a) for p in strangers for a in ATTRIBUTES]


def wrong_answers(examples: list[Example], share: float, seed: int = 0) -> list[Example]:
    """A copy of a Q/A set (`qa_task`) in which `share` of the answers, round(share * n) examples drawn
    with `seed`, are wrong: another value of the asked attribute, drawn with the same seed. Noisy
    fine-tuning data, for measuring what label noise costs.

    >>> train = qa_task()["train"]
    >>> noisy = wrong_answers(train, 0.25)
    >>> sum(a.response != b.response for a, b in zip(train, noisy)), len(train)
    (60, 240)
    >>> wrong_answers(train, 1.5)
    Traceback (most recent call last):
    ...
    ValueError: share (the wrong-answer share) must be a number in [0, 1], got 1.5
    """
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise ValueError(f"share (the wrong-answer share) must be a number in [0, 1], got {share!r}")
    unknown = [e for e in examples if e.meta.get("attribute") not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"examples must be Q/A examples (qa_task) whose meta names an attribute of "
                         f"{list(ATTRIBUTES)}; {len(unknown)} do not, such as {unknown[0].prompt!r}")
    rng = random.Random(f"wrong-answers-{seed}")
    out = list(examples)
    for i in rng.sample(range(len(out)), round(share * len(out))):
        e = out[i]
        truth = e.response.strip()
        value = rng.choice([v for v in ATTRIBUTES[e.meta["attribute"]] if v != truth])
        out[i] = Example(e.prompt, f" {value}\n", {**e.meta, "wrong": True})
    return out


def _split(items: list, seed: str, val: float = 0.1, test: float = 0.1) -> dict[str, list]:
    """Deduplicate by text, shuffle, cut into disjoint train/val/test."""
    unique = list({(x.prompt, x.response) if isinstance(x, Example) else x: x for x in items}.values())
    random.Random(seed).shuffle(unique)
    n_val, n_test = int(len(unique) * val), int(len(unique) * test)
    return {"train": unique[n_val + n_test:], "val": unique[:n_val], "test": unique[n_val:n_val + n_test]}


INSTRUCTION_FAMILIES = ("reverse", "uppercase", "count", "sort", "repeat", "first_letters", "fact_qa")
# Each rule family once: the wording it is trained with, the input it takes (one word, two words, or
# three to five words), and the rule that computes its output. fact_qa answers from the world instead.
TRAINED_PHRASINGS = {
    "reverse": "Reverse the letters of the word.", "uppercase": "Write the text in capital letters.",
    "count": "Count the letters in the word.", "sort": "Sort the words in alphabetical order.",
    "repeat": "Repeat the word three times.", "first_letters": "Write the first letter of each word.",
    "fact_qa": "Answer the question about the world.",
}
INPUTS = {"reverse": "word", "uppercase": "two words", "count": "word", "sort": "words", "repeat": "word",
          "first_letters": "words"}
RULES = {
    "reverse": lambda s: s[::-1],
    "uppercase": str.upper,
    "count": lambda s: str(len(s)),
    "sort": lambda s: " ".join(sorted(s.split())),
    "repeat": lambda s: " ".join([s] * 3),
    "first_letters": lambda s: "".join(w[0] for w in s.split()),
}
# Other wordings of the trained families, which only the self-instruct teacher learns (so it has
# instructions to invent); they differ from the held-out paraphrases of `peftlab.instruct`.
TEACHER_PHRASINGS = {
    "reverse": ["Write the word in reverse.", "Flip the order of the letters."],
    "uppercase": ["Make every letter of the text a capital.", "Convert the text to uppercase."],
    "count": ["Give the number of letters in the word.", "Tell how long the word is."],
    "sort": ["Order the words from A to Z.", "Arrange the words alphabetically."],
    "repeat": ["Write the word three times.", "Copy the word three times."],
    "first_letters": ["Take the initial of each word.", "Join the first letters of the words."],
    "fact_qa": ["Answer this question.", "Reply to the question about a person."],
}


def _instruction(family: str, rng: random.Random, people: tuple[Person, ...]) -> Instruction:
    word, words = rng.choice(WORDS), rng.sample(WORDS, rng.randint(3, 5))  # drawn for every family
    if family == "fact_qa":
        person, attribute = rng.choice(people), rng.choice(list(ATTRIBUTES))
        return Instruction("fact_qa", TRAINED_PHRASINGS["fact_qa"], QUESTIONS[attribute].format(n=person.name),
                           getattr(person, attribute))
    x = {"word": word, "two words": " ".join(words[:2]), "words": " ".join(words)}[INPUTS[family]]
    return Instruction(family, TRAINED_PHRASINGS[family], x, RULES[family](x))


def instructions(seed: int = 0, per_family: int = 200) -> dict[str, list[Instruction]]:
    """Instruction families built from the world and a word list, split train/val/test.

    >>> {split: len(v) for split, v in instructions().items()}
    {'train': 711, 'val': 88, 'test': 88}
    """
    rng = random.Random(f"instructions-{seed}")
    people = world(seed)
    records = [_instruction(f, rng, people) for f in INSTRUCTION_FAMILIES for _ in range(per_family)]
    return _split(records, f"instructions-split-{seed}")


def sql_task(seed: int = 0) -> dict[str, list[Example]]:
    """Natural language to SQL over a table `people(name, city, job, pet, color)`.

    >>> sql_task()["train"][0].response
    "SELECT job FROM people WHERE name = 'Tortorwyn';\\n"
    """
    people = world(seed)
    pairs = []
    for c in CITIES:
        pairs.append((f"Which people live in {c}?", f"SELECT name FROM people WHERE city = '{c}';"))
        for j in JOBS:
            pairs.append((f"List the {j}s who live in {c}.",
                          f"SELECT name FROM people WHERE job = '{j}' AND city = '{c}';"))
    for j in JOBS:
        pairs.append((f"How many {j}s are there?", f"SELECT COUNT(*) FROM people WHERE job = '{j}';"))
    for col in COLORS:
        pairs.append((f"Which people like {col}, sorted by name?",
                      f"SELECT name FROM people WHERE color = '{col}' ORDER BY name;"))
    for p in people:
        for a in ("city", "job", "pet", "color"):
            pairs.append((f"Look up the {a} of {p.name}.", f"SELECT {a} FROM people WHERE name = '{p.name}';"))
    examples = [Example(f"-- {q}\n", f"{sql}\n", {"domain": "sql"}) for q, sql in pairs]
    return _split(examples, f"sql-{seed}")


def python_task(seed: int = 0) -> dict[str, list[Example]]:
    """Natural language to Python: small functions from a handful of templates.

    >>> {split: len(v) for split, v in python_task().items()}
    {'train': 176, 'val': 21, 'test': 21}
    """
    pairs = []
    for k in range(2, 40):
        pairs.append((f"Write a function that adds {k} to a number.", f"def add_{k}(x):\n    return x + {k}"))
        pairs.append((f"Write a function that multiplies a number by {k}.",
                      f"def times_{k}(x):\n    return x * {k}"))
        pairs.append((f"Write a function that keeps the words longer than {k} letters.",
                      f"def longer_than_{k}(words):\n    return [w for w in words if len(w) > {k}]"))
        pairs.append((f"Write a function that returns item {k} of a list.", f"def item_{k}(xs):\n    return xs[{k}]"))
    for ch in "abcdefghijklmnopqrstuvwxyz":
        pairs.append((f"Write a function that counts the letter {ch} in a string.",
                      f"def count_{ch}(s):\n    return s.count('{ch}')"))
    for w in WORDS:
        pairs.append((f"Write a function that says hello to {w}.", f"def hello_{w}():\n    return 'hello {w}'"))
    examples = [Example(f"# {q}\n", f"{code}\n", {"domain": "python"}) for q, code in pairs]
    return _split(examples, f"python-{seed}")


def python_heldout() -> list[Example]:
    """240 more held-out Python pairs, for measuring the Python task on more than its 21 test examples: the
    four numeric templates of `python_task` at k = 40 to 99, which `python_task` never uses (it stops at 39).

    >>> extra = python_heldout()
    >>> len(extra), extra[0].prompt
    (240, '# Write a function that adds 40 to a number.\\n')
    >>> {e.prompt for e in extra} & {e.prompt for split in python_task().values() for e in split}
    set()
    """
    pairs = []
    for k in range(40, 100):
        pairs += [(f"Write a function that adds {k} to a number.", f"def add_{k}(x):\n    return x + {k}"),
                  (f"Write a function that multiplies a number by {k}.", f"def times_{k}(x):\n    return x * {k}"),
                  (f"Write a function that keeps the words longer than {k} letters.",
                   f"def longer_than_{k}(words):\n    return [w for w in words if len(w) > {k}]"),
                  (f"Write a function that returns item {k} of a list.", f"def item_{k}(xs):\n    return xs[{k}]")]
    return [Example(f"# {q}\n", f"{code}\n", {"domain": "python"}) for q, code in pairs]


def sql_python_task(seed: int = 0) -> dict[str, list[Example]]:
    """The SQL and Python tasks in one training set, each with equal weight: train holds every SQL pair and
    the Python pairs four times (624 + 4 x 176), shuffled; val and test hold as many of each (21 + 21).
    For one adapter trained on both tasks at once.

    >>> mix = sql_python_task()
    >>> {k: len(v) for k, v in mix.items()}, sum(e.meta["domain"] == "python" for e in mix["train"])
    ({'train': 1328, 'val': 42, 'test': 42}, 704)
    """
    return _mixture({"sql": (sql_task(seed), 1), "python": (python_task(seed), 4)}, f"sql-python-{seed}")


def _mixture(tasks: dict[str, tuple[dict[str, list[Example]], int]], shuffle_seed: str) -> dict[str, list[Example]]:
    """Tasks in one set, in order: each task's train pairs repeated its number of times; val and test hold as
    many of each task as the last task has (the smallest); every split shuffled with `shuffle_seed`."""
    last = list(tasks.values())[-1][0]
    rng = random.Random(shuffle_seed)
    out = {}
    for split in ("train", "val", "test"):
        joined = [e for task, repeats in tasks.values()
                  for e in (task["train"] * repeats if split == "train" else task[split][:len(last[split])])]
        rng.shuffle(joined)
        out[split] = joined
    return out


def qa_sql_python_task(seed: int = 0) -> dict[str, list[Example]]:
    """The Q/A, SQL and Python tasks in one training set, each with about equal weight: every SQL pair, the
    Q/A pairs three times and the Python pairs four times (624 + 3 x 240 + 4 x 176), shuffled; val and test
    hold as many of each as Python has (21 + 21 + 21). For one adapter trained on all three (multi-task).

    >>> mix = qa_sql_python_task()
    >>> {k: len(v) for k, v in mix.items()}
    {'train': 2048, 'val': 63, 'test': 63}
    """
    return _mixture({"qa": (qa_task(seed), 3), "sql": (sql_task(seed), 1), "python": (python_task(seed), 4)},
                    f"qa-sql-python-{seed}")


def _complement(seq: str) -> str:
    return seq[::-1].translate(str.maketrans("ACGT", "TGCA"))


def dna_task(seed: int = 0, n: int = 3000) -> dict[str, list[str]]:
    """DNA-like sequences, a domain absent from pre-training, with structure to learn.

    Each line is a "gene": ATG, then motifs drawn from a sparse Markov chain over 10 motifs,
    then TAA; after a '|' comes its reverse complement, which is fully predictable.

    >>> seq = dna_task()["train"][0]
    >>> seq[:12], "|" in seq  # a gene, then its reverse complement after the bar
    ('ATGGAGGGGATA', True)
    """
    rng = random.Random(f"dna-{seed}")
    motifs = ["".join(rng.choice("ACGT") for _ in range(rng.randint(3, 6))) for _ in range(10)]
    successors = {m: rng.sample(range(len(motifs)), 2) for m in range(len(motifs))}
    lines = []
    for _ in range(n):
        m = rng.randrange(len(motifs))
        body = [motifs[m]]
        for _ in range(rng.randint(5, 10)):
            m = rng.choice(successors[m])
            body.append(motifs[m])
        gene = "ATG" + "".join(body) + "TAA"
        lines.append(f"{gene}|{_complement(gene)}")
    return _split(lines, f"dna-split-{seed}")


def corpus_sha256(seed: int = 0) -> str:
    """One hash over every generated corpus and task, to pin determinism in a test.

    >>> corpus_sha256()[:12]
    '956ae60faa38'
    """
    h = hashlib.sha256()
    for split in pretraining_corpus(seed).values():
        h.update("\n".join(split).encode())
    for task in (qa_task(seed), sql_task(seed), python_task(seed)):
        for split in task.values():
            h.update("".join(e.text for e in split).encode())
    for split in instructions(seed).values():
        h.update("".join(f"{r.family}{r.instruction}{r.input}{r.output}" for r in split).encode())
    for split in dna_task(seed).values():
        h.update("\n".join(split).encode())
    return h.hexdigest()
