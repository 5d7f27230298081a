"""Studies: the declared, seeded, stored experiments that back a notebook's claims.

A notebook trains for a minute and shows one run. A study is the same comparison done properly, once,
offline: every run seeded, the learning rate swept and chosen on validation data (never on test), five
seeds at the chosen rate, curves on held-out data, and each claim weighed by `peftlab.evidence.compare`
with a margin declared before any run. The results are a JSON file in `peftlab/studies/results/`; the
notebook loads it (`load_results`), draws its band (`band`) and checks that its own short live run lands
inside it (`live_point_inside`).

A study declares, in one `Study` value (see `peftlab/studies/prompt_tuning.py`):

* its claims (`Claim`): the statement, its source, the metric, the direction (`kind`, as `compare`'s
  `claim`) and the margin; `b` is another method, or "base" (`BASE`), the base model's own value;
* the methods (`Method`): a name and options for `peftlab.methods.prepare`, the learning rates swept,
  and the maximum number of steps; optionally a training subset (`n_train`), another base checkpoint
  (`base`), a share of wrong answers in the training set (`wrong`), another task (`task`), the tokens
  the training loss covers (`loss_on`: the response, the default, or prompt and response), or, for a
  method named `FUSION`, the adapter methods it fuses (`sources`: AdapterFusion's stage 2);
* models joined after the runs from their adapters (`Combo`) and a weight sweep over two of them;
* the seeds, the sweep (seeds and steps), how often the curves are evaluated, the batch size, the task;
* the budget rule: every final run trains its method's `steps`; the compared metric has plateaued at
  the first evaluation step s where it improved by less than `plateau` (relative) over the last
  `plateau_window` of the steps, from step (1 - window) * s to s, on the validation split. The results
  report that step per method, or None where the budget ended before a plateau (then a claim on that
  method is about a budget, not about convergence, and the results say so).

What a run does, for each method in the order declared (a fusion after its sources): (1) sweep: train
`sweep_steps` at every learning rate for each sweep seed, measure the compared metric on the validation
split, keep the rate with the best mean; (2) final runs: one per seed at that rate, evaluating the metric
on val and test every `eval_every` steps (the curve), then every final metric on the test split. Every
run starts from `torch.manual_seed(seed)` before `methods.prepare` (LoRA's A and a soft prompt are drawn
from torch's generator) and trains with `train(..., seed=seed)`, so (method, lr, seed) fixes the run.

Staleness: the results hold the config and its SHA-256 (`config_hash`) and the base checkpoint's SHA-256.
`status` is "stale" when either differs from now, "missing" with no file, "fresh" otherwise.

    python -m peftlab.studies list
    python -m peftlab.studies run 06_prompt [--device cuda]
    python -m peftlab.studies check 06_prompt
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import __version__, adapters, data, instruct, methods, multitask, self_instruct, teacher
from ..checkpoint import CHECKPOINT_DIR, load_base, manifest
from ..checks import int_at_least, positive_int, positive_number
from ..evaluate import evaluate_loss, greedy_accuracy, ranking_accuracy
from ..evidence import CLAIMS, compare, t_quantile
from ..train import LOSS_ON, NonFiniteLoss, train

RESULTS_DIR = Path(__file__).parent / "results"
# peftlab/studies/<module>.py, each defining STUDY, imported on demand; a declared study joins once it has run
STUDY_MODULES = ("full_forgetting", "finetune_data", "instruction_tuning", "combine_adapters", "adapter_fusion",
                 "lora_init", "peft_methods", "qlora_vs_lora", "prompt_tuning", "prefix_tuning", "learn_forget",
                 "self_instruct_students", "lora_rank", "ptuning_encoders", "full_vs_lora")
# A study's task by name: the tasks of peftlab.data, the instruction tasks of notebook 09 (the live recipe's
# records, and the teacher's larger set) and the self-instruct students' sets of notebook 19 (`si_<student>`),
# all held out on the same new words (`instruct.instruct_sets`)
TASKS = {**{name: getattr(data, name) for name in ("qa_task", "sql_task", "python_task", "dna_task", "sql_python_task",
                                                     "qa_sql_python_task")},
         "instruct_task": instruct.instruct_task, "teacher_task": teacher.teacher_task,
         **{f"si_{name}": functools.partial(self_instruct.student_task, name) for name in self_instruct.STUDENTS}}
# A method named FUSION is AdapterFusion's stage 2 (Pfeiffer et al. 2021): per seed, the adapters that seed's
# final runs of `Method.sources` trained (stage 1) are gathered into one model (`adapters.gather`) and frozen,
# and a fusion layer over them (`adapters.add_fusion`) trains on the method's task.
FUSION = "fusion"
SPLITS = ("val", "test")
QA_EVAL_NOTE = ("val 48 questions (12 people x 4) for the sweep and the plateau; test 192 questions (48 held-out "
                "people x 4 facts), all the task has, for the curves and the claims")  # the Q/A studies' eval_note
BASE = "base"  # a claim's b may name the base model itself: its step-0 value on the test curve (one number)
CHECK_TOLERANCE = 0.005  # nats: a replica on the same device agrees to ~1e-6; a changed run differs by far more


def answer_loss(model: nn.Module, examples: Sequence[data.Example]) -> float:
    """Mean loss per answer token (the prompt carries no loss): `evaluate_loss(..., loss_on="response")`."""
    return evaluate_loss(model, examples, loss_on="response")


def rc_loss(model: nn.Module, sequences: Sequence[str]) -> float:
    """Mean loss per token of the predictable half of `data.dna_task` sequences: the reverse complement
    after the '|' (and the end of text), given the gene before it. Below ln 4 = 1.386 nats a model has
    learned more than the four-letter alphabet."""
    cut = [s.index("|") + 1 for s in sequences]
    return evaluate_loss(model, [data.Example(s[:i], s[i:]) for s, i in zip(sequences, cut)], loss_on="response")


def fact_rank(model: nn.Module, facts: Sequence[data.Example]) -> float:
    """Facts of pre-training (`data.fact_completion`) whose true value the model ranks first among every
    value of that attribute (`evaluate.ranking_accuracy`; chance 1/12 to 1/16)."""
    return ranking_accuracy(model, facts, [[f" {v}" for v in data.ATTRIBUTES[f.meta["attribute"]]] for f in facts])


def strangers() -> dict[str, list[data.Example]]:
    """Q/A about 12 people pre-training never mentions (`data.stranger_qa`, 48 questions), as both splits:
    a control that no format answers."""
    qa = data.stranger_qa()
    return {"val": qa, "test": qa}


@functools.lru_cache(maxsize=1)
def sql_splits() -> dict[str, list[data.Example]]:
    """The SQL task's val (78) and test (78) pairs: one task of two, measured on every model of a study."""
    sql = data.sql_task()
    return {"val": sql["val"], "test": sql["test"]}


@functools.lru_cache(maxsize=1)
def python_splits() -> dict[str, list[data.Example]]:
    """The Python task's val (21) and, for test, its 21 test pairs plus `data.python_heldout` (240): 261."""
    python = data.python_task()
    return {"val": python["val"], "test": python["test"] + data.python_heldout()}


def pair_splits() -> dict[str, tuple]:
    """Both tasks' splits side by side, for `pair_loss`."""
    return {s: (sql_splits()[s], python_splits()[s]) for s in SPLITS}


def pair_loss(model: nn.Module, pair: tuple) -> float:
    """The mean of the SQL and the Python answer loss: both tasks with equal weight, whatever their sizes."""
    return statistics.fmean(answer_loss(model, examples) for examples in pair)


@functools.lru_cache(maxsize=1)
def fact_splits() -> dict[str, list[data.Example]]:
    """The 480 facts of pre-training, alternately to val (240) and test (240): old knowledge, not trained on."""
    facts = data.fact_completion()
    return {"val": facts[0::2], "test": facts[1::2]}


def instruct_heldout(name: str) -> dict[str, list[data.Example]]:
    """One held-out set of `instruct.instruct_sets` ("wordings", "families", "facts") as both splits: measured
    at the end only, never used to choose anything."""
    return {s: instruct.instruct_sets()[name] for s in SPLITS}


# metric name -> (function(model, examples), "min" or "max": which way is better). exact_match is counted
# by `greedy_accuracy`, which gives what `evaluate.exact_match` gives in one forward pass instead of generation.
METRICS: dict[str, tuple[Callable[[nn.Module, Sequence], float], str]] = {
    "answer_loss": (answer_loss, "min"),
    "exact_match": (greedy_accuracy, "max"),
    "loss": (evaluate_loss, "min"),  # every token (texts without a prompt, such as `data.dna_task`)
    "rc_loss": (rc_loss, "min"),  # `data.dna_task`: the reverse complement only
    "fact_rank": (fact_rank, "max"),  # old knowledge, on `fact_splits`
    "fact_match": (greedy_accuracy, "max"),  # old knowledge, on `fact_splits`: greedy completion of the value
    "stranger_match": (greedy_accuracy, "max"),  # Q/A about people never read about (`strangers`)
    "sql_loss": (answer_loss, "min"),  # on `sql_splits`, whatever the study's task
    "python_loss": (answer_loss, "min"),  # on `python_splits`
    "pair_loss": (pair_loss, "min"),  # the mean of the two
    "python_match": (greedy_accuracy, "max"),  # on `python_splits`: the whole answer right
    "format_ok": (instruct.format_rate, "max"),  # instruction tasks: the answer in its family's form, then stop
    "wording_match": (greedy_accuracy, "max"),  # instruction tasks: new inputs in `instruct.NEW_WORDINGS`
    "family_match": (greedy_accuracy, "max"),  # instruction tasks: `instruct.NEW_FAMILIES`, never trained
    "facts_match": (greedy_accuracy, "max"),  # instruction tasks: fact questions about the Q/A test people
}
# Metrics measured on their own data instead of the task's val and test splits (old knowledge, say).
METRIC_DATA: dict[str, Callable[[], dict[str, list]]] = {"fact_rank": fact_splits, "fact_match": fact_splits,
                                                         "stranger_match": strangers, "sql_loss": sql_splits,
                                                         "python_loss": python_splits, "pair_loss": pair_splits,
                                                         "python_match": python_splits,
                                                         "wording_match": lambda: instruct_heldout("wordings"),
                                                         "family_match": lambda: instruct_heldout("families"),
                                                         "facts_match": lambda: instruct_heldout("facts")}


def measure_finals(model: nn.Module, finals: Sequence[str], split: str, splits: dict) -> dict[str, float]:
    """Every metric of `finals` on `split`, rounded to 6 places. `pair_loss`, when `sql_loss` and
    `python_loss` are measured too, is their mean, not a second pass over both tasks."""
    raw = {f: METRICS[f][0](model, _data(f, split, splits)) for f in finals
           if not (f == "pair_loss" and {"sql_loss", "python_loss"} <= set(finals))}
    if "pair_loss" in finals and "pair_loss" not in raw:
        raw["pair_loss"] = statistics.fmean((raw["sql_loss"], raw["python_loss"]))
    return {f: round(raw[f], 6) for f in finals}


# what a claim weighs: the final runs' test metric, the sweep's breadth, or the curves at a matched level
ON = ("final", "sweep_width", "matched")


@dataclass(frozen=True)
class Claim:
    """One claim, declared before the runs: `a` vs `b` (method labels) on `metric` (test split, end of
    training), weighed by `evidence.compare(a, b, claim=kind, margin=margin, paired=paired)`.

    `on="sweep_width"` weighs the learning-rate sweep instead (a claim about stability): per sweep seed, how
    many of the method's swept rates reach `success` on the validation metric (at or below it for a loss, at
    or above it for an accuracy); both methods must sweep the same rates. The threshold is declared with the
    claim, before the run.

    `on="matched"` reads both methods at the same level of the study's compared metric (a trade-off, such
    as old knowledge kept at equal new-domain loss): per final run, `metric` on the test curve at the first
    point where the validation curve of the compared metric reaches `success`, interpolated linearly
    between the two evaluation steps around it. A run that never reaches the level gives no value, and the
    claim is then inconclusive, with the reason."""

    id: str
    statement: str
    source: str
    metric: str
    a: str
    b: str
    kind: str
    margin: float
    paired: bool = False
    on: str = "final"
    success: float | None = None


@dataclass(frozen=True)
class Method:
    """One compared method: `label` in the results, `name` and `options` for `methods.prepare`, the
    learning rates swept (`lrs`) and the steps of a final run (the budget's maximum)."""

    label: str
    name: str
    options: Mapping[str, object]
    lrs: tuple[float, ...]
    steps: int
    n_train: int | None = None  # train on the first n training examples only (a low-data set-up); None: all
    sweep_seeds: tuple[int, ...] | None = None  # this method's sweep seeds, if not the study's
    base: str | None = None  # this method's base checkpoint, if not the study's (a second pre-training)
    wrong: float | None = None  # Q/A only: this share of the training answers wrong (`data.wrong_answers`)
    task: str | None = None  # this method's task (training, the sweep, the curves), if not the study's
    sources: tuple[str, ...] = ()  # name "fusion" only: the adapter methods it fuses (`FUSION`)
    loss_on: str = "response"  # which tokens the training loss covers (`train.LOSS_ON`): "all" trains on prompts too


# How a `Combo` joins trained adapters: "base" is the base model itself (no adapter); "cat", "linear", "svd" are
# `lora.combine`'s; the rest PEFT's (`multitask.PEFT_MERGES`).
COMBO_KINDS = ("base", "cat", "linear", "svd", *multitask.PEFT_MERGES)


@dataclass(frozen=True)
class Combo:
    """One model built after the final runs, per seed, from the adapters that seed's runs trained: the methods
    in `weights` (LoRA methods on the same base) joined with those weights by `kind` (`COMBO_KINDS`; `density`
    and `rank` for the PEFT and SVD kinds). Measured on every final metric; a claim may name its label."""

    label: str
    kind: str
    weights: Mapping[str, float] = field(default_factory=dict)
    density: float | None = None
    rank: int | None = None


@dataclass(frozen=True)
class Study:
    """A declared study; everything in it is the config, hashed by `config_hash`. See the module docstring."""

    id: str
    title: str
    notebook: str
    methods: tuple[Method, ...]
    claims: tuple[Claim, ...]
    seeds: tuple[int, ...]
    seeds_note: str
    sweep_seeds: tuple[int, ...]
    sweep_steps: int
    eval_every: int
    eval_note: str
    batch_size: int = 16
    task: str = "qa_task"
    base: str = "tiny"
    metric: str = "answer_loss"  # the compared metric: learning-rate choice, curves, plateau
    finals: tuple[str, ...] = ("answer_loss", "exact_match")  # measured on the test split at the end
    plateau: float = 0.01
    plateau_window: float = 0.25
    n_eval: int | None = None  # use only the first n of val and of test (None: all of them)
    curve_metrics: tuple[str, ...] = ()  # measured on the curve too, besides `metric` (such as exact_match)
    curve_splits: tuple[str, ...] = SPLITS  # where `curve_metrics` are measured (`metric` always on both)
    eval_steps: tuple[int, ...] = ()  # evaluation steps besides every `eval_every` (dense early probes)
    sweep_metrics: tuple[str, ...] = ()  # also measured on val at the end of every sweep run (not for choice)
    combos: tuple[Combo, ...] = ()  # models joined from the final runs' adapters, per seed (`Combo`)
    weight_sweep: tuple[str, ...] = ()  # combo kinds swept over weights (1 - t, t) of `weight_pair`, per seed
    weight_pair: tuple[str, ...] = ()  # the two methods of the weight sweep
    weight_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    notes: str = ""

    def __post_init__(self) -> None:
        positive_int(self.eval_every, "eval_every")
        labels = [m.label for m in self.methods]
        if len(self.methods) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"methods must be at least 2 methods with distinct labels, got {labels}")
        for m in self.methods:
            if m.name not in (*methods.BUILDERS, FUSION):
                raise ValueError(f"method {m.label!r}: name must be one of {[*methods.BUILDERS, FUSION]}, "
                                 f"got {m.name!r}")
            if (m.name == FUSION) != bool(m.sources):
                raise ValueError(f"method {m.label!r}: sources (the adapters to fuse) go with name {FUSION!r} "
                                 f"only, and it needs them; got name {m.name!r}, sources {m.sources!r}")
            if m.sources:
                earlier = [e.label for e in self.methods[:self.methods.index(m)] if e.name == "adapters"]
                if (isinstance(m.sources, str) or len(m.sources) < 2 or len(set(m.sources)) != len(m.sources)
                        or not set(m.sources) <= set(earlier)):
                    raise ValueError(f"method {m.label!r}: sources must name at least 2 distinct adapter methods "
                                     f"declared before it {earlier}, got {m.sources!r}")
                if not set(self.sweep_seeds_of(m.label)) <= set(self.seeds):
                    raise ValueError(f"method {m.label!r}: a fusion sweeps on final-run adapters, so its sweep "
                                     f"seeds must be among seeds {self.seeds}, got {self.sweep_seeds_of(m.label)}")
            if m.loss_on not in LOSS_ON:
                raise ValueError(f"method {m.label!r}: loss_on must be one of {LOSS_ON}, got {m.loss_on!r}")
            if not m.lrs:
                raise ValueError(f"method {m.label!r}: lrs must list at least one learning rate")
            for lr in m.lrs:
                positive_number(lr, f"method {m.label!r} lrs")
            int_at_least(m.steps, f"method {m.label!r} steps", self.eval_every)
            if m.n_train is not None:
                positive_int(m.n_train, f"method {m.label!r} n_train")
            if m.sweep_seeds is not None and not m.sweep_seeds:
                raise ValueError(f"method {m.label!r}: sweep_seeds must list at least one seed, or be None")
            if m.base is not None and (not isinstance(m.base, str) or not m.base):
                raise ValueError(f"method {m.label!r}: base must name a base checkpoint, or be None; got {m.base!r}")
            if m.task is not None and m.task not in TASKS:
                raise ValueError(f"method {m.label!r}: task must be one of {tuple(TASKS)} or None, got {m.task!r}")
            if m.wrong is not None:
                if (m.task or self.task) != "qa_task":
                    raise ValueError(f"method {m.label!r}: wrong (a share of wrong answers) needs task='qa_task', "
                                     f"got {self.task!r}")
                data.wrong_answers([], m.wrong)  # its own check: a number in [0, 1]
        for seed in (*self.seeds, *self.sweep_seeds, *(s for m in self.methods for s in m.sweep_seeds or ())):
            int_at_least(seed, "seeds and sweep_seeds", 0)
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be at least 2 distinct seeds (compare needs 2 values a side), "
                             f"got {self.seeds}")
        if not self.sweep_seeds:
            raise ValueError("sweep_seeds must list at least one seed")
        positive_int(self.sweep_steps, "sweep_steps")
        positive_int(self.batch_size, "batch_size")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {tuple(TASKS)}, got {self.task!r}")
        for name, value in (("metric", self.metric), *(("finals", f) for f in self.finals),
                            *(("curve_metrics", f) for f in self.curve_metrics),
                            *(("sweep_metrics", f) for f in self.sweep_metrics)):
            if value not in METRICS:
                raise ValueError(f"{name} must name metrics of {list(METRICS)}, got {value!r}")
        if not 0 < self.plateau < 1 or not 0 < self.plateau_window < 1:
            raise ValueError(f"plateau and plateau_window must lie in (0, 1), got {self.plateau}, "
                             f"{self.plateau_window}")
        if self.n_eval is not None:
            positive_int(self.n_eval, "n_eval")
        if not self.curve_splits or any(s not in SPLITS for s in self.curve_splits):
            raise ValueError(f"curve_splits must name splits of {SPLITS}, got {self.curve_splits}")
        for step in self.eval_steps:
            positive_int(step, "eval_steps")
        combos = [c.label for c in self.combos]
        if len(set(combos)) != len(combos) or set(combos) & set(labels) or BASE in combos:
            raise ValueError(f"combos must have distinct labels, none a method's or {BASE!r}, got {combos}")
        for c in self.combos:
            if c.kind not in COMBO_KINDS:
                raise ValueError(f"combo {c.label!r}: kind must be one of {COMBO_KINDS}, got {c.kind!r}")
            if (c.kind == "base") != (not c.weights) or not set(c.weights) <= set(labels):
                raise ValueError(f"combo {c.label!r}: weights must map method labels {labels} to weights (none for "
                                 f"kind 'base'), got {dict(c.weights)!r}")
        for kind in self.weight_sweep:
            if kind not in COMBO_KINDS or kind == "base":
                raise ValueError(f"weight_sweep must name combo kinds of {COMBO_KINDS[1:]}, got {kind!r}")
        if self.weight_sweep and (len(self.weight_pair) != 2 or not set(self.weight_pair) <= set(labels)):
            raise ValueError(f"weight_pair must name 2 methods of {labels} for the weight sweep, got {self.weight_pair}")
        labels = [*labels, *combos]  # claims may weigh combos too
        for c in self.claims:
            if c.a not in labels or c.b not in (*labels, BASE):
                raise ValueError(f"claim {c.id!r}: a and b must be method labels {labels} (b may also be "
                                 f"{BASE!r}, the base model), got {c.a!r}, {c.b!r}")
            if c.b == BASE and (c.on != "final" or not (c.metric == self.metric or (
                    c.metric in self.curve_metrics and "test" in self.curve_splits))):
                raise ValueError(f"claim {c.id!r}: b={BASE!r} reads the base model at step 0 of the test curve, "
                                 f"so it needs on='final' and a metric on that curve ({self.metric!r} or "
                                 f"curve_metrics with 'test' in curve_splits), got on={c.on!r}, {c.metric!r}")
            if c.on not in ON:
                raise ValueError(f"claim {c.id!r}: on must be one of {ON}, got {c.on!r}")
            if c.a in combos or c.b in combos:
                if c.b == BASE:
                    raise ValueError(f"claim {c.id!r}: a combo has no curve to read the base model from; declare "
                                     f"a Combo of kind 'base' and name it as b")
                if c.on != "final":
                    raise ValueError(f"claim {c.id!r}: a combo has final values only, so on must be 'final', got {c.on!r}")
            if c.on == "final" and c.metric not in self.finals:
                raise ValueError(f"claim {c.id!r}: metric must be one of finals {self.finals}, got {c.metric!r}")
            if c.on == "sweep_width":
                if c.metric != self.metric or c.success is None or not math.isfinite(c.success):
                    raise ValueError(f"claim {c.id!r}: a sweep_width claim needs metric={self.metric!r} (the "
                                     f"swept metric) and a finite success threshold, got {c.metric!r}, {c.success!r}")
                if self.sweep_seeds_of(c.a) != self.sweep_seeds_of(c.b) or len(self.sweep_seeds_of(c.a)) < 2:
                    raise ValueError(f"claim {c.id!r}: a sweep_width claim needs {c.a!r} and {c.b!r} to sweep "
                                     f"the same seeds, at least 2")
                if self.method(c.a).lrs != self.method(c.b).lrs:
                    raise ValueError(f"claim {c.id!r}: a sweep_width claim needs {c.a!r} and {c.b!r} to sweep "
                                     f"the same learning rates, got {self.method(c.a).lrs} and {self.method(c.b).lrs}")
            if c.on == "matched":
                if c.metric not in self.curve_metrics or "test" not in self.curve_splits:
                    raise ValueError(f"claim {c.id!r}: a matched claim reads metric on the test curve, so it "
                                     f"must be one of curve_metrics {self.curve_metrics}, got {c.metric!r}")
                if c.success is None or not math.isfinite(c.success):
                    raise ValueError(f"claim {c.id!r}: a matched claim needs a finite success (the level of "
                                     f"{self.metric!r} to match at), got {c.success!r}")
            if c.kind not in CLAIMS:
                raise ValueError(f"claim {c.id!r}: kind must be one of {CLAIMS}, got {c.kind!r}")
            compare([0.0, 1.0], [0.0, 1.0], claim=c.kind, margin=c.margin)  # the margin's own checks

    def sweep_seeds_of(self, label: str) -> tuple[int, ...]:
        """The seeds a method's learning-rate sweep trains: its own, or else the study's."""
        return self.method(label).sweep_seeds or self.sweep_seeds

    def method(self, label: str) -> Method:
        """The method with this label."""
        for m in self.methods:
            if m.label == label:
                return m
        raise ValueError(f"method must be one of {[m.label for m in self.methods]}, got {label!r}")


# --- the registry ---------------------------------------------------------------------------------------

def all_studies() -> dict[str, Study]:
    """Every declared study by id (the modules of `STUDY_MODULES`, imported here, not at package import).

    >>> "06_prompt" in all_studies()
    True
    """
    found = [importlib.import_module(f"{__name__}.{name}").STUDY for name in STUDY_MODULES]
    return {s.id: s for s in found}


def get(study: Study | str) -> Study:
    """The study with this id (a `Study` is returned as it is).

    >>> get("no_such_study")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown study 'no_such_study'; known studies: ...06_prompt...
    """
    if isinstance(study, Study):
        return study
    known = all_studies()
    if study not in known:
        raise ValueError(f"unknown study {study!r}; known studies: {', '.join(known)}")
    return known[study]


# --- config, hash, status -------------------------------------------------------------------------------

def config(study: Study) -> dict:
    """The study's declaration as plain JSON data (tuples become lists), as stored in its results."""
    return json.loads(json.dumps(dataclasses.asdict(study)))


# Words that describe a study and change none of its numbers or verdicts: editing them (a citation
# corrected, a sentence reworded) leaves the results fresh. Everything else is the experiment.
WORDS = {"study": ("title", "notebook", "seeds_note", "eval_note", "notes"), "claim": ("statement", "source")}
# Fields added after a study was run, left out of the experiment while they hold their default (which is
# what every earlier run did), so adding a capability does not make the studies that do not use it stale.
OPTIONAL = {"study": {"curve_metrics": [], "curve_splits": list(SPLITS), "eval_steps": [], "sweep_metrics": [],
                      "combos": [], "weight_sweep": [], "weight_pair": [], "weight_grid": [0.0, 0.25, 0.5, 0.75, 1.0]},
            "claim": {"on": "final", "success": None},
            "method": {"n_train": None, "sweep_seeds": None, "base": None, "wrong": None, "task": None,
                       "sources": [], "loss_on": "response"}}


def _drop_defaults(d: dict, kind: str) -> dict:
    return {k: v for k, v in d.items() if not (k in OPTIONAL[kind] and v == OPTIONAL[kind][k])}


def experiment(config: dict) -> dict:
    """A config without its descriptive words (`WORDS`): what the staleness check compares.

    >>> sorted(experiment(config(get("06_prompt"))))[:3]
    ['base', 'batch_size', 'claims']
    """
    out = _drop_defaults({k: v for k, v in config.items() if k not in WORDS["study"]}, "study")
    out["claims"] = [_drop_defaults({k: v for k, v in c.items() if k not in WORDS["claim"]}, "claim")
                     for c in config.get("claims", [])]
    out["methods"] = [_drop_defaults(m, "method") for m in config.get("methods", [])]
    return out


def config_hash(study: Study | dict) -> str:
    """SHA-256 of the canonical JSON of the experiment (sorted keys, no spaces): methods, learning-rate grids,
    seeds, steps, evaluation, claims with their kinds and margins; not the descriptive words.

    >>> s = get("06_prompt")
    >>> len(config_hash(s)), config_hash(s) == config_hash(get("06_prompt"))
    (64, True)
    >>> wider = dataclasses.replace(s, claims=(dataclasses.replace(s.claims[0], margin=0.2),) + s.claims[1:])
    >>> config_hash(wider) == config_hash(s)
    False
    >>> reworded = dataclasses.replace(s, claims=(dataclasses.replace(s.claims[0], source="another"),) + s.claims[1:])
    >>> config_hash(reworded) == config_hash(s)
    True
    """
    data_ = experiment(config(study) if isinstance(study, Study) else study)
    canonical = json.dumps(data_, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def bases(study: Study) -> list[str]:
    """The base checkpoints a study trains from: its own first, then any a method names."""
    return list(dict.fromkeys([study.base, *(m.base for m in study.methods if m.base)]))


def base_hash(study: Study, checkpoints: Path = CHECKPOINT_DIR) -> str:
    """The SHA-256 of the study's base checkpoint weights, from its manifest (`checkpoints/<base>.json`); for a
    study with a second base (`Method.base`), the SHA-256 of every base's name and hash."""
    names = bases(study)
    if len(names) == 1:
        return manifest(study.base, checkpoints)["sha256"]
    joined = ",".join(f"{n}:{manifest(n, checkpoints)['sha256']}" for n in names)
    return hashlib.sha256(joined.encode()).hexdigest()


def results_path(study: Study | str, directory: Path = RESULTS_DIR) -> Path:
    """Where a study's results live: `<directory>/<id>.json`."""
    return Path(directory) / f"{study.id if isinstance(study, Study) else study}.json"


def _differences(stored: object, current: object, path: str) -> list[str]:
    """Human-readable differences between two JSON values ("config.claims[x].margin: 0.1 -> 0.2")."""
    if isinstance(stored, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(stored) | set(current)):
            where = f"{path}.{key}"
            if key not in stored:
                out.append(f"{where}: absent from the file, declared now as {current[key]!r}")
            elif key not in current:
                out.append(f"{where}: in the file ({stored[key]!r}), no longer declared")
            else:
                out += _differences(stored[key], current[key], where)
        return out
    if isinstance(stored, list) and isinstance(current, list) and len(stored) == len(current):
        out = []
        for i, (s, c) in enumerate(zip(stored, current)):
            name = c.get("id", c.get("label", i)) if isinstance(c, dict) else i
            out += _differences(s, c, f"{path}[{name}]")
        return out
    return [] if stored == current else [f"{path}: the file has {stored!r}, the study now declares {current!r}"]


def _read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def status(study: Study | str, directory: Path = RESULTS_DIR, checkpoints: Path = CHECKPOINT_DIR) -> str:
    """"fresh", "stale" (config or base checkpoint changed since the run, or an unreadable file) or "missing".

    >>> status("06_prompt", directory=tempfile.mkdtemp())
    'missing'
    """
    study = get(study)
    path = results_path(study, directory)
    if not path.exists():
        return "missing"
    now = config_hash(study), base_hash(study, checkpoints)
    try:
        stored = _read(path)
        then = stored["config_sha256"], stored["base_sha256"]
    except (ValueError, KeyError):  # unreadable JSON, or not a results file
        return "stale"
    return "fresh" if then == now else "stale"


def load_results(study: Study | str, directory: Path = RESULTS_DIR, checkpoints: Path = CHECKPOINT_DIR) -> dict:
    """The stored results of a study, refused (ValueError, naming what differs) when they were made with
    another config or another base checkpoint than the current ones.

    >>> load_results("06_prompt", directory=tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: no results for study '06_prompt' ...; run `python -m peftlab.studies run 06_prompt`
    """
    study = get(study)
    path = results_path(study, directory)
    rerun = f"python -m peftlab.studies run {study.id}"
    if not path.exists():
        raise FileNotFoundError(f"no results for study {study.id!r} in {path.parent}; run `{rerun}`")
    results = _read(path)
    diffs = _differences(experiment(results.get("config") or {}), experiment(config(study)), "config")
    if diffs or results.get("config_sha256") != config_hash(study):
        shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
        raise ValueError(f"{path.name} was made with another config than study {study.id!r} declares now: "
                         f"{shown or 'the stored config hash does not match'}; rerun `{rerun}`")
    now = base_hash(study, checkpoints)
    if results.get("base_sha256") != now:
        raise ValueError(f"{path.name} was made on base checkpoint {str(results.get('base_sha256'))[:12]}..., "
                         f"the {study.base!r} checkpoint is now {now[:12]}...; rerun `{rerun}`")
    return results


def _jsonable(x: object) -> object:
    """`x` with every NaN or infinity (a diverged run) written as null, which JSON can hold."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def write_results(results: dict, path: Path) -> Path:
    """Write JSON atomically: a temporary file in the same directory, then `os.replace`, so a reader (or a
    crash halfway) never sees half a file; a failed write leaves the old file, if any, as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_jsonable(results), f, indent=1, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- the budget rule ------------------------------------------------------------------------------------

def plateau_step(steps: Sequence[int], values: Sequence[float], goal: str = "min", threshold: float = 0.01,
                 window: float = 0.25) -> int | None:
    """The first evaluation step s whose value improved by less than `threshold` (relative) on the value at
    the last evaluation step at or before (1 - window) * s; None if no step qualifies.

    >>> plateau_step([0, 10, 20, 30, 40], [2.0, 1.0, 0.8, 0.795, 0.794])
    30
    >>> plateau_step([0, 10, 20], [2.0, 1.0, 0.5]) is None
    True
    """
    if goal not in ("min", "max"):
        raise ValueError(f"goal must be 'min' or 'max', got {goal!r}")
    for i, s in enumerate(steps):
        if s == 0:
            continue
        earlier = [k for k in range(i) if steps[k] <= (1 - window) * s]
        if not earlier:
            continue
        j = earlier[-1]
        gain = values[j] - values[i] if goal == "min" else values[i] - values[j]
        if gain / max(abs(values[j]), 1e-12) < threshold:
            return s
    return None


def work(study: Study) -> dict[str, dict[str, int]]:
    """Training steps and curve evaluations per method for a full run (what its run time is made of).

    >>> work(get("06_prompt"))["prompt20"]
    {'sweep_steps': 600, 'final_steps': 2000, 'curve_evals': 45}
    """
    out = {}
    for m in study.methods:
        points = len(_eval_steps(m.steps, study.eval_every, study.eval_steps))
        out[m.label] = {"sweep_steps": len(m.lrs) * len(study.sweep_seeds_of(m.label)) * study.sweep_steps,
                        "final_steps": len(study.seeds) * m.steps, "curve_evals": len(study.seeds) * points}
    return out


def _eval_steps(steps: int, every: int, extra: Sequence[int] = ()) -> list[int]:
    return sorted({0, steps, *range(every, steps + 1, every), *(s for s in extra if s <= steps)})


def _data(metric: str, split: str, splits: dict) -> list:
    """What `metric` is measured on: its own data (`METRIC_DATA`), or else the task's split."""
    return METRIC_DATA[metric]()[split] if metric in METRIC_DATA else splits[split]


# --- running --------------------------------------------------------------------------------------------

class _Stop(Exception):
    """Raised from the training callback to end a run after its first steps (`check`)."""


def check_device(device: str | torch.device) -> torch.device:
    """The device to run on, as asked: "cpu" or "cuda[:n]"; never switched to another one.

    >>> check_device("cpu")
    device(type='cpu')
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}, but torch finds no CUDA GPU here; run with --device cpu")
    return dev


def _splits(study: Study, method: Method | None = None) -> dict[str, list]:
    """The train, val and test splits of a method's task (the study's, unless the method names its own)."""
    splits = TASKS[(method.task if method else None) or study.task]()
    n = study.n_eval
    return {"train": splits["train"], **{s: splits[s][:n] if n else splits[s] for s in SPLITS}}


def _one_run(base: nn.Module, method: Method, lr: float, seed: int, study: Study, splits: dict, *,
             curve: bool, stop_after: int | None = None, tick: Callable[[], None] = lambda: None,
             sources: Mapping[str, nn.Module] | None = None) -> tuple:
    """Train one (method, lr, seed); returns (model, record). With `curve`, a final run: the compared metric
    (and `curve_metrics`) measured at step 0 and at every evaluation step, and the training loss of every
    step kept; else a sweep run of `sweep_steps`. `stop_after` ends either early (the learning rate is
    constant, so the first steps are those of the whole run). A `FUSION` method fuses the trained adapter
    models `sources` (label -> model)."""
    steps = method.steps if curve else study.sweep_steps
    measured = {s: (study.metric, *(study.curve_metrics if s in study.curve_splits else ())) for s in SPLITS}
    record: dict = {"seed": seed, "train_loss": [],
                    "curve": {"step": [], **{s: {f: [] for f in measured[s]} for s in SPLITS}}}
    train_set = splits["train"][:method.n_train] if method.n_train else splits["train"]
    if method.wrong is not None:  # the same answers wrong in every run: the data is part of the set-up
        train_set = data.wrong_answers(train_set, method.wrong)
    torch.manual_seed(seed)
    if method.name == FUSION:
        if sources is None or list(sources) != list(method.sources):
            raise ValueError(f"method {method.label!r} fuses {list(method.sources)}: sources must map those "
                             f"labels to their trained adapter models, got {None if sources is None else list(sources)}")
        model = adapters.gather(sources)  # stage 1's adapters, copied in and frozen
        adapters.add_fusion(model, list(sources), name=FUSION)
    else:
        model = methods.prepare(base, method.name, **method.options)
    at = set(_eval_steps(steps, study.eval_every, study.eval_steps))

    def measure(step: int) -> None:
        record["curve"]["step"].append(step)
        for s in SPLITS:
            for f in measured[s]:
                record["curve"][s][f].append(round(METRICS[f][0](model, _data(f, s, splits)), 6))

    def after_step(step: int, loss: float) -> None:
        record["train_loss"].append(round(loss, 6))
        if curve and step in at:
            measure(step)
        tick()
        if stop_after is not None and step >= stop_after:
            raise _Stop

    start = time.perf_counter()
    if curve:
        measure(0)
    try:
        train(model, train_set, steps=steps, lr=lr, batch_size=study.batch_size, seed=seed, loss_on=method.loss_on,
              progress=False, on_step=after_step)
    except _Stop:
        pass
    except NonFiniteLoss as e:  # diverged: kept in the record, never scored as if it had trained
        record["diverged_at_step"] = e.step
        if curve:  # the rest of the curve is missing: NaN (null in the file)
            record["curve"]["step"] = _eval_steps(min(stop_after or steps, steps), study.eval_every, study.eval_steps)
            for s in SPLITS:
                for values in record["curve"][s].values():
                    values.extend([math.nan] * (len(record["curve"]["step"]) - len(values)))
    record["wall_time_s"] = round(time.perf_counter() - start, 2)
    return model, record


def run(study: Study | str, *, directory: Path = RESULTS_DIR, checkpoints: Path = CHECKPOINT_DIR,
        device: str = "cpu", progress: bool = True) -> dict:
    """Run a study in full (per method: sweep, then every seed at the chosen rate), weigh its claims, and write
    `<directory>/<id>.json` atomically; returns the results. Long: see the study's docstring for its time.

    >>> run("no_such_study")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown study 'no_such_study'; known studies: ...06_prompt...
    """
    from tqdm import tqdm  # the plain bar: this runs from a terminal

    study = get(study)
    dev = check_device(device)
    if Path(directory).resolve() == Path(checkpoints).resolve():  # <id>.json would overwrite a manifest
        raise ValueError(f"directory (the results) must differ from checkpoints, both are {directory}")
    loaded = {name: load_base(name, device=dev, directory=checkpoints) for name in bases(study)}  # or a clear error
    splits = _splits(study)
    splits_of = {m.label: _splits(study, m) for m in study.methods}
    keep = ({label for c in study.combos for label in c.weights} | set(study.weight_pair)  # adapters to join
            | {label for m in study.methods for label in m.sources})  # and to fuse
    kept: dict[str, list[nn.Module]] = {label: [] for label in keep}
    total = sum(w["sweep_steps"] + w["final_steps"] for w in work(study).values())
    start = time.perf_counter()
    sweep, runs = {}, {}
    with tqdm(total=total, disable=not progress, desc=study.id, unit="step") as bar:
        score, goal = METRICS[study.metric]
        for m in study.methods:  # per method, in order (a fusion needs its sources' final adapters):
            # 1. the learning-rate sweep, on the validation split
            grid = []
            for lr in m.lrs:
                per_seed, also = [], {f: [] for f in study.sweep_metrics}
                for seed in study.sweep_seeds_of(m.label):
                    bar.set_postfix_str(f"sweep {m.label} lr={lr:g} seed={seed}")
                    model, rec = _one_run(loaded[m.base or study.base], m, lr, seed, study, splits_of[m.label],
                                          curve=False, tick=bar.update, sources=_sources(study, m, kept, seed))
                    diverged = "diverged_at_step" in rec
                    per_seed.append(math.nan if diverged else round(score(model, splits_of[m.label]["val"]), 6))
                    for f in study.sweep_metrics:  # measured, never used to choose
                        also[f].append(math.nan if diverged else
                                       round(METRICS[f][0](model, _data(f, "val", splits_of[m.label])), 6))
                grid.append({"lr": lr, "val": per_seed, "mean": round(statistics.fmean(per_seed), 6),
                             **({"also": also} if also else {})})
            worst = math.inf if goal == "min" else -math.inf  # a diverged rate (NaN) is never chosen
            best = (min if goal == "min" else max)(
                grid, key=lambda g: g["mean"] if math.isfinite(g["mean"]) else worst)["lr"]
            sweep[m.label] = {"metric": study.metric, "split": "val", "steps": study.sweep_steps,
                              "seeds": list(study.sweep_seeds_of(m.label)), "grid": grid, "best_lr": best}
            # 2. the final runs, every seed at the chosen rate
            lr, records = sweep[m.label]["best_lr"], []
            for seed in study.seeds:
                bar.set_postfix_str(f"{m.label} lr={lr:g} seed={seed}")
                model, record = _one_run(loaded[m.base or study.base], m, lr, seed, study, splits_of[m.label],
                                         curve=True, tick=bar.update, sources=_sources(study, m, kept, seed))
                record["final"] = ({f: math.nan for f in study.finals} if "diverged_at_step" in record else
                                   measure_finals(model, study.finals, "test", splits_of[m.label]))
                if m.label in kept:
                    kept[m.label].append(model)
                c = record["curve"]
                record["plateau_step"] = plateau_step(c["step"], c["val"][study.metric], goal, study.plateau,
                                                      study.plateau_window)
                records.append(record)
            c = records[0]["curve"]
            mean_val = [statistics.fmean(r["curve"]["val"][study.metric][i] for r in records)
                        for i in range(len(c["step"]))]
            runs[m.label] = {"lr": lr, "steps": m.steps, "seeds": records,
                             "plateau_step": plateau_step(c["step"], mean_val, goal, study.plateau,
                                                          study.plateau_window)}
        bar.set_postfix_str("combos")
        combos = _combos(study, loaded[study.base], kept, splits)
        weight_sweep = _weight_sweep(study, loaded[study.base], kept, splits)
    results = {
        "id": study.id, "title": study.title, "config": config(study), "config_sha256": config_hash(study),
        "peftlab_version": __version__, "base": study.base, "base_sha256": base_hash(study, checkpoints),
        "torch": torch.__version__, "device": str(dev), "threads": torch.get_num_threads(),
        "eval_sizes": {s: len(v) for s, v in splits.items()},
        "budget_rule": budget_rule(study), "sweep": sweep, "runs": runs,
        **({"combos": combos} if study.combos else {}), **({"weight_sweep": weight_sweep} if study.weight_sweep else {}),
        "claims": [weigh(c, {**runs, **combos}, sweep) for c in study.claims],
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    write_results(results, results_path(study, directory))
    return results


def _sources(study: Study, method: Method, kept: dict, seed: int) -> dict[str, nn.Module] | None:
    """A fusion's stage-1 adapters for `seed`: the models its sources' final runs of that seed trained."""
    if not method.sources:
        return None
    i = study.seeds.index(seed)
    return {label: kept[label][i] for label in method.sources}


def _combine(study: Study, base: nn.Module, kept: dict, i: int, kind: str, weights: Mapping[str, float],
             density: float | None = None, rank: int | None = None) -> nn.Module:
    if kind == "base":
        return base
    return multitask.merge_adapters(base, {label: kept[label][i] for label in weights}, dict(weights), kind,
                                    density=density, rank=rank, seed=study.seeds[i])


def _combos(study: Study, base: nn.Module, kept: dict, splits: dict) -> dict:
    """Every `Combo`, per seed of the final runs: built from that seed's adapters, measured on the finals."""
    out = {}
    for c in study.combos:
        records = []
        for i, seed in enumerate(study.seeds):
            model = _combine(study, base, kept, i, c.kind, c.weights, c.density, c.rank)
            records.append({"seed": seed, "final": measure_finals(model, study.finals, "test", splits)})
        out[c.label] = {"combo": dataclasses.asdict(c) | {"weights": dict(c.weights)}, "seeds": records}
    return out


def _weight_sweep(study: Study, base: nn.Module, kept: dict, splits: dict) -> dict:
    """Per kind of `weight_sweep`, per seed, per t of `weight_grid`: the finals of weights (1 - t, t) over
    `weight_pair`."""
    a, b = study.weight_pair or (None, None)
    out = {}
    for kind in study.weight_sweep:
        per_seed = []
        for i, seed in enumerate(study.seeds):
            values = {f: [] for f in study.finals}
            for t in study.weight_grid:
                model = _combine(study, base, kept, i, kind, {a: 1.0 - t, b: t},
                                 rank=max(m.options.get("r", 8) for m in study.methods) if kind.endswith("svd") else None)
                for f, value in measure_finals(model, study.finals, "test", splits).items():
                    values[f].append(value)
            per_seed.append({"seed": seed, **values})
        out[kind] = {"t": list(study.weight_grid), "pair": [a, b], "seeds": per_seed}
    return out


def budget_rule(study: Study) -> str:
    """The budget rule in words, as stored with the results.

    >>> print(budget_rule(get("06_prompt")).split(";")[0])
    every final run trains its method's steps (prompt20 400, prompt20_label 400, prompt5 400, prompt50 400, lora 400, full 400)
    """
    steps = ", ".join(f"{m.label} {m.steps}" for m in study.methods)
    return (f"every final run trains its method's steps ({steps}); the plateau is the first evaluation step s "
            f"where val {study.metric} improved by less than {study.plateau:.0%} (relative) since step "
            f"{1 - study.plateau_window:g} * s; null: no plateau within the budget")


def sweep_width(sweep: dict, label: str, success: float) -> list[int]:
    """Per sweep seed: how many of `label`'s swept learning rates reached `success` on the validation
    metric (at or below it for a loss, at or above for an accuracy); a diverged run (null) never does.

    >>> grid = [{"lr": 0.1, "val": [1.0, 2.5]}, {"lr": 1.0, "val": [1.5, None]}]
    >>> sweep_width({"m": {"metric": "answer_loss", "grid": grid}}, "m", 2.0)
    [2, 0]
    """
    s = sweep[label]
    better = (lambda v: v <= success) if METRICS[s["metric"]][1] == "min" else (lambda v: v >= success)
    per_seed = zip(*(g["val"] for g in s["grid"]))
    return [sum(1 for v in values if v is not None and math.isfinite(v) and better(v)) for values in per_seed]


def matched_value(record: dict, by: str, level: float, metric: str) -> float | None:
    """One final run's test `metric` at the first evaluation where its val curve of `by` reaches `level`
    (at or below for a loss, at or above for an accuracy), interpolated linearly between the evaluation
    steps around that point; None when the run never reaches it.

    >>> curve = {"step": [0, 10, 20], "val": {"rc_loss": [3.0, 1.0, 0.5]}, "test": {"fact_rank": [0.9, 0.5, 0.3]}}
    >>> matched_value({"curve": curve}, "rc_loss", 2.0, "fact_rank"), matched_value({"curve": curve}, "rc_loss", 0.1, "fact_rank")
    (0.7, None)
    """
    x, y = record["curve"]["val"][by], record["curve"]["test"][metric]
    reached = (lambda v: v <= level) if METRICS[by][1] == "min" else (lambda v: v >= level)
    for i, v in enumerate(x):
        if reached(v):
            if i == 0:
                return y[0]
            f = (level - x[i - 1]) / (v - x[i - 1])  # how far between the two probes the level lies
            return round(y[i - 1] + f * (y[i] - y[i - 1]), 6)
    return None


def weigh(claim: Claim, runs: dict, sweep: dict | None = None) -> dict:
    """A claim's verdict from per-seed values (`evidence.compare`), with what it rests on: the final runs'
    test metric, (`on="sweep_width"`) the number of swept rates that reached `success`, per sweep seed, or
    (`on="matched"`) the final runs' test metric where their val curve of the compared metric reaches
    `success` (`matched_value`)."""
    if claim.on in ("sweep_width", "matched") and sweep is None:
        raise ValueError(f"claim {claim.id!r} needs the sweep (it names the compared metric): pass sweep=")
    if claim.on == "sweep_width":
        a, b = (sweep_width(sweep, m, claim.success) for m in (claim.a, claim.b))
    elif claim.on == "matched":
        by = sweep[claim.a]["metric"]
        a, b = ([matched_value(r, by, claim.success, claim.metric) for r in runs[m]["seeds"]] for m in (claim.a, claim.b))
        missing = [f"{m}: {v.count(None)} of {len(v)} runs" for m, v in ((claim.a, a), (claim.b, b)) if None in v]
        if missing:
            return {**dataclasses.asdict(claim), "claim": claim.statement, "a_values": a, "b_values": b,
                    "verdict": "inconclusive", "estimate": None, "low": None, "high": None,
                    "n_seeds": min(len(a), len(b)),
                    "reason": f"never reached val {by} {claim.success:g} ({'; '.join(missing)})"}
    else:
        a = [r["final"][claim.metric] for r in runs[claim.a]["seeds"]]
        b = (runs[claim.a]["seeds"][0]["curve"]["test"][claim.metric][0] if claim.b == BASE  # one number
             else [r["final"][claim.metric] for r in runs[claim.b]["seeds"]])
    out = {**dataclasses.asdict(claim), "claim": claim.statement, "a_values": a, "b_values": b}
    try:
        ev = compare(a, b, claim=claim.kind, margin=claim.margin, paired=claim.paired)
    except ValueError as e:  # a diverged run (NaN), or no spread at all: say so rather than lose the study
        return {**out, "verdict": "not computed", "reason": str(e), "estimate": None, "low": None, "high": None,
                "n_seeds": min(len(a), len(b))}
    if claim.on == "sweep_width":
        note = f"counted on the sweep: {sweep[claim.a]['steps']} steps per rate"
    elif claim.on == "matched":
        note = f"read where each run's val {sweep[claim.a]['metric']} first reaches {claim.success:g}"
    else:
        unplateaued = [m for m in (claim.a, claim.b) if m != BASE and "combo" not in runs[m]
                       and runs[m]["plateau_step"] is None]
        note = (f"no plateau within the budget for {', '.join(unplateaued)}: the verdict is about that budget, "
                f"not about converged runs") if unplateaued else ""
    return {**out, "verdict": ev.verdict, "estimate": ev.estimate, "low": ev.low, "high": ev.high,
            "n_seeds": ev.n, "df": ev.df, "text": str(ev), "budget_note": note}


# --- using the results ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Band:
    """Per evaluation step: the mean over seeds and the interval around it (`band`)."""

    step: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    n: int
    interval: str = "mean"
    confidence: float = 0.95

    def at(self, step: int) -> tuple[float, float, float]:
        """(mean, low, high) at an evaluation step."""
        if step not in self.step:
            raise ValueError(f"step must be one of the study's evaluation steps {self.step}, got {step!r}")
        i = self.step.index(step)
        return self.mean[i], self.low[i], self.high[i]


def _curves(results: dict, method: str, metric: str, split: str) -> tuple[list[int], list[list[float]]]:
    runs = results["runs"]
    if method not in runs:
        raise ValueError(f"method must be one of {list(runs)}, got {method!r}")
    seeds = runs[method]["seeds"]
    if metric == "train_loss":
        return list(range(1, len(seeds[0]["train_loss"]) + 1)), [r["train_loss"] for r in seeds]
    curve = seeds[0]["curve"]
    if split not in SPLITS or metric not in curve[split]:
        raise ValueError(f"metric must be 'train_loss' or one of {list(curve['test'])}, split one of {SPLITS}; "
                         f"got metric={metric!r}, split={split!r}")
    return curve["step"], [r["curve"][split][metric] for r in seeds]


def band(results: dict, method: str, metric: str = "answer_loss", split: str = "test", *,
         confidence: float = 0.95, interval: str = "mean") -> Band:
    """Mean over seeds per evaluation step, with a t interval: `interval="mean"` is the confidence interval
    of the mean (mean +- t * sd / sqrt(n)); `"run"` is where one more seed's run should land (a prediction
    interval, mean +- t * sd * sqrt(1 + 1/n)), the one to hold a single live run against.

    >>> seeds = [{"curve": {"step": [0, 10], "test": {"answer_loss": [3.0, v]}}} for v in (1.0, 1.2, 1.1)]
    >>> b = band({"runs": {"lora": {"seeds": seeds}}}, "lora", "answer_loss")
    >>> round(b.mean[1], 3), round(b.low[1], 3), round(b.high[1], 3), b.n
    (1.1, 0.852, 1.348, 3)
    """
    if interval not in ("mean", "run"):
        raise ValueError(f"interval must be 'mean' or 'run', got {interval!r}")
    steps, curves = _curves(results, method, metric, split)
    n = len(curves)
    if n < 2:
        raise ValueError(f"a band needs at least 2 seeds, the results of {method!r} have {n}")
    t = t_quantile(0.5 + confidence / 2, n - 1)
    widen = math.sqrt(1 / n) if interval == "mean" else math.sqrt(1 + 1 / n)
    mean, low, high = [], [], []
    for values in zip(*curves):
        m, sd = statistics.fmean(values), statistics.stdev(values)
        mean.append(m)
        low.append(m - t * sd * widen)
        high.append(m + t * sd * widen)
    return Band(list(steps), mean, low, high, n, interval, confidence)


def live_point_inside(results: dict, method: str, step: int, value: float, metric: str = "answer_loss",
                      split: str = "test", confidence: float = 0.95) -> tuple[bool, str]:
    """Does a live run's `value` at `step` land inside the study's band for one run (`band(...,
    interval="run")`)? Returns (inside, a sentence saying where it landed).

    >>> seeds = [{"curve": {"step": [0, 10], "test": {"answer_loss": [3.0, v]}}} for v in (1.0, 1.2, 1.1)]
    >>> live_point_inside({"runs": {"lora": {"seeds": seeds}}}, "lora", 10, 1.15)
    (True, 'lora answer_loss at step 10: 1.15 is inside the study band [0.6032, 1.597] (mean 1.1, 3 seeds)')
    """
    mean, low, high = band(results, method, metric, split, confidence=confidence, interval="run").at(step)
    inside = low <= value <= high
    where = "inside" if inside else "OUTSIDE"
    return inside, (f"{method} {metric} at step {step}: {value:.4g} is {where} the study band "
                    f"[{low:.4g}, {high:.4g}] (mean {mean:.4g}, {len(_curves(results, method, metric, split)[1])} "
                    f"seeds)")


def require_inside(results: dict, method: str, step: int, value: float, metric: str = "answer_loss",
                   split: str = "test") -> str:
    """`live_point_inside` as a check for a notebook's live run: raises AssertionError, saying where the
    run landed, when it left the study's band; else returns a sentence naming the band (not the live value,
    which varies a little from machine to machine).

    >>> seeds = [{"curve": {"step": [0, 10], "test": {"answer_loss": [3.0, v]}}} for v in (1.0, 1.2, 1.1)]
    >>> require_inside({"runs": {"lora": {"seeds": seeds}}}, "lora", 10, 1.15)
    "the live run lies inside the study's band for lora at step 10: [0.603, 1.6]"
    """
    _, low, high = band(results, method, metric, split, interval="run").at(step)
    if not low <= value <= high:
        message = live_point_inside(results, method, step, value, metric, split)[1]
        raise AssertionError(f"the live run left the study's band: {message}; rerun the study or look for a "
                             f"regression")
    return f"the live run lies inside the study's band for {method} at step {step}: [{low:.3g}, {high:.3g}]"


def live_run(results: dict, method: str, steps: int, base: nn.Module, *, seed: int = 0) -> tuple[nn.Module, float]:
    """One point of a study, trained here by the study's own code: `method` at the learning rate the study
    chose, `seed`, for its first `steps` steps (one of the study's evaluation steps), on a copy of `base`.
    Returns (the trained model, the compared metric on the test split at `steps`), to hold against
    `live_point_inside`. On the machine that ran the study it reproduces the stored run of that seed.

    >>> live_run({"id": "06_prompt", "runs": {}}, "prompt20", 7, None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: steps must be one of the study's evaluation steps [0, 50, 100, ...], got 7
    """
    study = get(results["id"])
    m = study.method(method)
    if m.name == FUSION:
        raise ValueError(f"method must be one that trains from the base; {method!r} fuses the adapters of "
                         f"{list(m.sources)}, which a live run does not have")
    at = _eval_steps(m.steps, study.eval_every, study.eval_steps)
    if steps not in at:
        raise ValueError(f"steps must be one of the study's evaluation steps {at}, got {steps!r}")
    splits = _splits(study, m)
    curve = steps > study.sweep_steps  # within a sweep run's length: no probes on the way, one measurement
    model, record = _one_run(base, m, results["runs"][m.label]["lr"], seed, study, splits, curve=curve,
                             stop_after=steps)
    return model, (record["curve"]["test"][study.metric][-1] if curve
                   else round(METRICS[study.metric][0](model, splits["test"]), 6))


# --- the cheap replica ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckResult:
    """The outcome of `check`: whether the replica agrees, its largest difference, and why."""

    ok: bool
    max_diff: float
    tolerance: float
    message: str = field(default="")

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


def check(study: Study | str, *, method: str | None = None, steps: int | None = None,
          tolerance: float = CHECK_TOLERANCE, directory: Path = RESULTS_DIR, checkpoints: Path = CHECKPOINT_DIR,
          device: str = "cpu") -> CheckResult:
    """Re-run a cheap replica (the first seed, the first `steps` steps, default `eval_every`, of one method,
    default the first, at its chosen lr) and compare its training losses and curve points with the stored
    ones: agreement when every difference is at most `tolerance`.

    >>> check("06_prompt", directory=tempfile.mkdtemp()).ok
    False
    """
    study = get(study)
    positive_number(tolerance, "tolerance")
    try:
        results = load_results(study, directory, checkpoints)
    except (FileNotFoundError, ValueError) as e:
        return CheckResult(False, math.inf, tolerance, str(e))
    m = study.method(method or study.methods[0].label)
    if m.name == FUSION:
        raise ValueError(f"method must be one that trains from the base; {m.label!r} fuses {list(m.sources)}")
    steps = positive_int(steps if steps is not None else study.eval_every, "steps")
    stored = results["runs"][m.label]["seeds"][0]
    lr, seed = results["runs"][m.label]["lr"], stored["seed"]
    _, replica = _one_run(load_base(m.base or study.base, device=check_device(device), directory=checkpoints), m, lr,
                          seed, study, _splits(study, m), curve=True, stop_after=min(steps, m.steps))
    pairs = list(zip(stored["train_loss"], replica["train_loss"]))
    for s in SPLITS:
        pairs += zip(stored["curve"][s][study.metric], replica["curve"][s][study.metric])
    diff = max(abs(a - b) for a, b in pairs)
    ok = diff <= tolerance
    what = (f"{study.id}: {m.label} lr={lr:g} seed {seed}, {len(replica['train_loss'])} steps on {device} "
            f"(stored on {results['device']}): largest difference {diff:.2g}, tolerance {tolerance:g}")
    return CheckResult(ok, diff, tolerance, f"{what}: {'agree' if ok else 'DISAGREE'}")
