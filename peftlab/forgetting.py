"""Catastrophic forgetting: the learning-forgetting trade-off of fine-tuning (notebooks 08 and 20), measured as Biderman et al. do
("LoRA Learns Less and Forgets Less", 2024, arXiv:2405.09673).

Fine-tuning on a new domain lowers the loss there (learning) and may lower the accuracy on what
the model knew before (forgetting). One setting proves little: a method can look safe only
because it moved less. So each method gets a *curve*: one training run per (method, learning
rate), probed every few steps, gives points (new-domain loss, old-knowledge accuracy). Methods are
then compared at *matched* new-domain loss, reading each curve by linear interpolation between
the two checkpoints that bracket the loss level (`accuracy_at`, `matched`).

The update itself: for full fine-tuning, Delta W = W_tuned - W_0 of one layer; for LoRA,
Delta W = (alpha / r) B A, rank <= r by construction. `effective_rank` counts the singular
values needed to explain a share (default 90%) of Delta W's variance, sum_i sigma_i^2, the
measure of Biderman et al. section 5.

LoRA's scaling follows Biderman et al.: alpha = 2 r, so alpha / r = 2 at every rank.

Probing is the cost of a curve, so old knowledge is scored by `evaluate.greedy_accuracy`: the same
count as `evaluate.exact_match`, from one teacher-forced forward pass instead of generation.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from . import data, lora, methods
from .checks import int_at_least, positive_int, positive_number
from .data import Example
from .evaluate import evaluate_loss, greedy_accuracy
from .train import train

KINDS = ("full", "lora")
Point = dict  # {"step": int, "domain_loss": float, "old_accuracy": float, ...}


@dataclass(frozen=True)
class Method:
    """How to fine-tune: every weight (`kind="full"`), or a LoRA adapter of rank `r` on `targets`
    (`kind="lora"`; `alpha=None` means alpha = 2 r).

    >>> Method("lora", r=8, targets=("q_proj", "v_proj")).label
    'LoRA r=8 q,v'
    """

    kind: str = "full"
    r: int = 8
    targets: str | tuple[str, ...] = lora.ALL_LINEAR
    alpha: float | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        positive_int(self.r, "r")
        if self.alpha is not None:
            positive_number(self.alpha, "alpha (None means 2 r)")

    @property
    def label(self) -> str:
        if self.kind == "full":
            return "full FT"
        if self.targets == lora.ALL_LINEAR:
            where = "all-linear"
        elif isinstance(self.targets, (tuple, list)):
            where = ",".join(t.removesuffix("_proj") for t in self.targets)
        else:
            where = str(self.targets)
        return f"LoRA r={self.r} {where}"

    def prepare(self, base: nn.Module) -> nn.Module:
        """A fresh copy of `base` ready to train with this method; `base` is left untouched."""
        if self.kind == "full":
            return methods.prepare(base, "full")
        alpha = 2 * self.r if self.alpha is None else self.alpha
        return methods.prepare(base, "lora", r=self.r, alpha=alpha, targets=self.targets)


@dataclass
class Probe:
    """Measures one checkpoint: a loss on new-domain text (`domain_metric`, default `evaluate_loss`,
    lower = learned more) and an accuracy on old-knowledge prompts (`old_metric`, default the greedy
    exact match of `greedy_accuracy`, higher = forgot less). Notebook 08 passes its study's metrics
    (`studies.rc_loss`, `studies.fact_rank`).

    >>> from peftlab import ModelConfig, Transformer
    >>> probe = Probe(data.dna_task()["val"][:8], data.fact_completion()[:8])
    >>> sorted(probe(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))))
    ['domain_loss', 'old_accuracy']
    """

    domain: Sequence[str | Example]
    old: Sequence[Example]
    domain_metric: Callable[[nn.Module, Sequence], float] = evaluate_loss
    old_metric: Callable[[nn.Module, Sequence[Example]], float] = greedy_accuracy

    def __call__(self, model: nn.Module) -> dict[str, float]:
        return {"domain_loss": self.domain_metric(model, self.domain), "old_accuracy": self.old_metric(model, self.old)}


def fact_subset(n: int = 120, seed: int = 0) -> list[Example]:
    """A fixed random subset of `data.fact_completion()`, in the original order (cheaper probes).

    >>> len(fact_subset(120)), len(data.fact_completion())
    (120, 480)
    """
    facts = data.fact_completion()
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(facts):
        raise ValueError(f"n must be an int in [1, {len(facts)}], got {n!r}")
    keep = sorted(random.Random(f"facts-{seed}").sample(range(len(facts)), n))
    return [facts[i] for i in keep]


@dataclass
class Curve:
    """One training run of one method at one learning rate, probed along the way."""

    method: Method
    lr: float
    points: list[Point]
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        return f"{self.method.label}, lr {self.lr:g}"

    @property
    def final(self) -> Point:
        return self.points[-1]


def run(base: nn.Module, method: Method, train_data: Sequence[str | Example], probe: Callable[[nn.Module], dict],
        *, lr: float, steps: int, every: int, batch_size: int = 16, seed: int = 0, keep_model: bool = False,
        start: dict | None = None, **train_kwargs) -> Curve:
    """Fine-tune a copy of `base` with `method` once, probing it at step 0 and every `every` steps
    (and at the last step) through `train`'s `on_step` callback: a whole curve for one run.
    `start`: `probe(base)` if already measured (step 0 is the base model for every method), else
    it is measured here.

    >>> from peftlab import ModelConfig, Transformer
    >>> probe = Probe(data.dna_task()["val"][:8], fact_subset(8))
    >>> c = run(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), Method("lora"), data.dna_task()["train"][:32], probe, lr=1e-3, steps=4, every=2)
    >>> [p["step"] for p in c.points]
    [0, 2, 4]
    """
    positive_int(every, "every (probe every that many steps)")
    positive_int(steps, "steps")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    model = method.prepare(base)
    points = [{"step": 0, **(probe(model) if start is None else start)}]

    def on_step(step: int, loss: float) -> None:
        if step % every == 0 or step == steps:
            points.append({"step": step, "train_loss": loss, **probe(model)})

    train(model, train_data, steps=steps, lr=lr, batch_size=batch_size, seed=seed, progress=False,
          on_step=on_step, **train_kwargs)
    return Curve(method, lr, points, model if keep_model else None)


def tune_lr(base: nn.Module, method: Method, train_data: Sequence[str | Example], probe: Callable[[nn.Module], dict],
            lrs: Sequence[float], *, steps: int, key: str = "domain_loss", minimize: bool = True,
            **run_kwargs) -> tuple[float, dict[float, float]]:
    """One run of `steps` per learning rate in `lrs`, each measured once at the end by `probe`;
    returns the learning rate with the best `key` (lowest if `minimize`) and every lr's value.
    Tune on a validation split and report on the test split.

    >>> from peftlab import ModelConfig, Transformer
    >>> probe = Probe(data.dna_task()["val"][:8], fact_subset(8))
    >>> tiny = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> best, losses = tune_lr(tiny, Method("lora"), data.dna_task()["train"][:32], probe, [1e-4, 1e-3], steps=3)
    >>> best, sorted(losses)
    (0.001, [0.0001, 0.001])
    """
    if not lrs or any(isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 for lr in lrs):
        raise ValueError(f"lrs must be a non-empty list of positive learning rates, got {lrs!r}")
    scores = {}
    for lr in lrs:
        final = run(base, method, train_data, probe, lr=lr, steps=steps, every=steps, **run_kwargs).final
        if key not in final:
            raise ValueError(f"key={key!r} is not measured by the probe; it returns {sorted(final)}")
        scores[lr] = final[key]
    best = (min if minimize else max)(scores, key=scores.get)
    return best, scores


# --- comparing curves at matched new-domain loss ---------------------------------------------

def accuracy_at(points: Sequence[Point], domain_loss: float, x: str = "domain_loss", y: str = "old_accuracy") -> float | None:
    """Old-knowledge accuracy where a curve first reaches `domain_loss`: linear interpolation
    between the two consecutive checkpoints that bracket it; None if the curve never gets there.

    >>> accuracy_at([{"domain_loss": 3.0, "old_accuracy": 1.0}, {"domain_loss": 1.0, "old_accuracy": 0.5}], 2.0)
    0.75
    """
    if not points:
        raise ValueError("points is empty")
    if points[0][x] <= domain_loss:
        return points[0][y]
    for a, b in zip(points, points[1:]):
        if b[x] <= domain_loss:
            t = (a[x] - domain_loss) / (a[x] - b[x])  # a[x] > domain_loss >= b[x]
            return a[y] + t * (b[y] - a[y])
    return None


def best_accuracy_at(curves: Sequence[Curve], domain_loss: float) -> float | None:
    """The best old-knowledge accuracy any of `curves` (one method, several learning rates) keeps
    when it reaches `domain_loss`: the method's frontier at that level; None if none reaches it."""
    found = [a for c in curves if (a := accuracy_at(c.points, domain_loss)) is not None]
    return max(found) if found else None


def lowest_loss(curves: Sequence[Curve]) -> float:
    """The lowest new-domain loss any checkpoint of `curves` reached (how far the method learned)."""
    return min(p["domain_loss"] for c in curves for p in c.points)


def matched_levels(groups: Sequence[Sequence[Curve]], n: int = 5, span: float = 2.0) -> list[float]:
    """`n` new-domain loss levels that every group of curves (one group per method) reaches, evenly
    spaced from the highest of the groups' lowest losses (as far as the least-learning method got)
    up to `span` times that loss (capped at the base model's loss). The first steps from a base
    model that has never seen the domain cut its loss by a large factor whatever the method; the
    comparison that matters lies near the low end.

    >>> g = [[Curve(Method(), 1e-4, [{"domain_loss": 4.0}, {"domain_loss": 1.0}])],
    ...      [Curve(Method("lora"), 1e-3, [{"domain_loss": 4.0}, {"domain_loss": 2.0}])]]
    >>> matched_levels(g, n=3, span=1.5)
    [2.0, 2.5, 3.0]
    """
    int_at_least(n, "n", 2)
    if not span > 1:
        raise ValueError(f"span must be a number > 1, got {span!r}")
    if len(groups) < 2 or any(not g for g in groups):
        raise ValueError("groups must hold at least two non-empty groups of curves")
    start = min(c.points[0]["domain_loss"] for g in groups for c in g)
    low = max(lowest_loss(g) for g in groups)
    high = min(span * low, start)
    return [low + (high - low) * i / (n - 1) for i in range(n)]


def matched(groups: dict[str, Sequence[Curve]], n: int = 5, span: float = 2.0) -> list[dict]:
    """Each method's frontier accuracy (`best_accuracy_at`) at the same new-domain loss levels
    (`matched_levels`): rows {"domain_loss": level, <method name>: accuracy, ...}.

    >>> full = [Curve(Method(), 1e-4, [{"domain_loss": 4.0, "old_accuracy": 1.0}, {"domain_loss": 1.0, "old_accuracy": 0.4}])]
    >>> adapter = [Curve(Method("lora"), 1e-3, [{"domain_loss": 4.0, "old_accuracy": 1.0}, {"domain_loss": 2.0, "old_accuracy": 0.5}])]
    >>> {k: round(v, 3) for k, v in matched({"full": full, "LoRA": adapter}, n=2, span=1.5)[0].items()}
    {'domain_loss': 2.0, 'full': 0.6, 'LoRA': 0.5}
    """
    levels = matched_levels(list(groups.values()), n, span)
    return [{"domain_loss": level, **{name: best_accuracy_at(g, level) for name, g in groups.items()}}
            for level in levels]


def verdict(rows: Sequence[dict], a: str, b: str, tolerance: float = 0.03) -> tuple[float, str]:
    """Mean accuracy gap a - b over the matched rows and what it says, with `tolerance` as the
    margin within which the two are called even (about the noise of a few probe prompts).

    >>> verdict([{"domain_loss": 1.0, "LoRA": 0.9, "full": 0.7}], "LoRA", "full")[1]
    'LoRA forgets less at matched domain loss'
    """
    gaps = [r[a] - r[b] for r in rows]
    mean = sum(gaps) / len(gaps)
    if mean > tolerance:
        return mean, f"{a} forgets less at matched domain loss"
    if mean < -tolerance:
        return mean, f"{b} forgets less at matched domain loss"
    return mean, f"{a} and {b} forget about equally at matched domain loss"


# --- the update's rank ------------------------------------------------------------------------

def weight_delta(model: nn.Module, base: nn.Module, name: str) -> torch.Tensor:
    """Delta W (out, in) of layer `name`: scaling * B A of the active adapter for a LoRA layer,
    W_tuned - W_0 for a fully fine-tuned one.

    >>> from peftlab import load_base
    >>> base = load_base(); tuned = Method("lora").prepare(base)
    >>> weight_delta(tuned, base, "layers.0.self_attn.q_proj").abs().max().item()  # B = 0 at init
    0.0
    """
    layer = model.get_submodule(name)
    with torch.no_grad():
        if isinstance(layer, lora.LoRALinear):
            if layer.merged:
                raise ValueError(f"layer {name!r} has its adapter merged; call lora.unmerge(model) first")
            return layer.delta_weight(layer.active).detach().float().cpu()
        return (layer.weight - base.get_submodule(name).weight).detach().float().cpu()


def effective_rank(delta: torch.Tensor, variance: float = 0.9) -> int:
    """Smallest k whose top-k singular values explain `variance` of sum_i sigma_i^2
    (Biderman et al. section 5); 0 for a zero matrix.

    >>> effective_rank(torch.diag(torch.tensor([3.0, 1.0, 0.0])))  # 9 / 10 = 90% with one value
    1
    """
    if not 0 < variance <= 1:
        raise ValueError(f"variance must be in (0, 1], got {variance!r}")
    if delta.dim() != 2:
        raise ValueError(f"delta must be a 2-D matrix, got shape {tuple(delta.shape)}")
    energy = torch.linalg.svdvals(delta.double()) ** 2
    total = energy.sum()
    if total == 0:
        return 0
    share = energy.cumsum(0) / total
    return int((share < variance - 1e-12).sum()) + 1
