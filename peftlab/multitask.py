"""Several tasks on one base model: one adapter per task, a set that mixes the tasks, scores per domain.

Notebooks 12 (combining LoRA adapters) and 13 (AdapterFusion) ask one question from two sides:
given an adapter trained for each task, how well does one model that holds them all do on each
task? Combining can cost a task some of its quality (interference); a good combination keeps
every task close to its own adapter. The shared pieces:

* `mixed_task`: the SQL and Python tasks in one set; every example keeps its `meta["domain"]`;
* `train_adapters`: one adapter per task, each added by a method's `add` and trained by the one
  training loop (stage 1 of AdapterFusion, and the start of every LoRA merge);
* `scores_by_domain`: a metric per domain of a mixed set (the answer loss, the teacher-forced
  `token_accuracy`, or exact match), so interference shows up as one domain getting worse
  while the other holds;
* `combine_scores`: `lora.combine` into a temporary adapter, score it, remove it again;
* `fusion_weights_for`, `mean_fusion_weights`: how much weight AdapterFusion gives each adapter,
  per token of one input, or on average per input domain.

The explorer of notebook 12 (a weight slider between two adapters) is `peftlab.explore.combine`.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from . import adapters, data, lora
from .checks import positive_int
from .data import Example
from .tokenizer import ByteTokenizer
from .evaluate import evaluate_loss, exact_match, token_accuracy
from .train import History, train

TASKS: dict[str, Callable[..., dict[str, list[Example]]]] = {"sql": data.sql_task, "python": data.python_task}
METRICS = ("loss", "token_accuracy", "exact_match")


def mixed_task(domains: Sequence[str] = ("sql", "python"), seed: int = 0,
               balanced: bool = False) -> dict[str, list[Example]]:
    """Each split (train/val/test) of the tasks `domains`, joined and shuffled (seeded); every
    example keeps its `meta["domain"]`, and no test example of a task is in another split.
    `balanced=True` keeps, in each split, as many examples of every domain as the smallest
    domain has there (SQL has about 3.5 times as many as Python), so no domain dominates the loss.

    >>> mixed = mixed_task(balanced=True)
    >>> sorted({e.meta["domain"] for e in mixed["test"]}), len(mixed["test"])
    (['python', 'sql'], 42)
    """
    if isinstance(domains, str) or not domains or not set(domains) <= set(TASKS) or len(set(domains)) != len(domains):
        raise ValueError(f"domains must be a non-empty sequence of distinct task names from {tuple(TASKS)}, "
                         f"got {domains!r}")
    if not isinstance(balanced, bool):
        raise TypeError(f"balanced must be True or False, got {balanced!r}")
    tasks = [TASKS[d](seed) for d in domains]
    out = {}
    for split in ("train", "val", "test"):
        keep = min(len(task[split]) for task in tasks) if balanced else None  # splits are already shuffled
        joined = [e for task in tasks for e in task[split][:keep]]
        random.Random(f"mixed-{split}-{seed}").shuffle(joined)
        out[split] = joined
    return out


def by_domain(examples: Sequence[Example]) -> dict[str, list[Example]]:
    """Examples grouped by `meta["domain"]`, domains in order of first appearance.

    >>> {d: len(v) for d, v in by_domain(mixed_task()["test"]).items()}
    {'sql': 78, 'python': 21}
    """
    groups: dict[str, list[Example]] = {}
    for e in examples:
        if "domain" not in e.meta:
            raise ValueError(f"every example needs meta['domain'] to be grouped; this one has none: {e.prompt!r}")
        groups.setdefault(e.meta["domain"], []).append(e)
    return groups


def score(model: nn.Module, examples: Sequence[Example], metric: str = "loss") -> float:
    """"loss": mean next-token loss on the response tokens (lower is better); "token_accuracy":
    see `evaluate.token_accuracy`; "exact_match": the fraction of greedy continuations that reproduce the
    whole response (higher is better, and the slowest: it generates).

    >>> from peftlab import load_base
    >>> round(score(load_base(), data.sql_task()["test"][:4], "exact_match"), 2)
    0.0
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if metric == "loss":
        return evaluate_loss(model, examples, loss_on="response")
    if metric == "token_accuracy":
        return token_accuracy(model, examples)
    return exact_match(model, examples)


def scores_by_domain(model: nn.Module, examples: Sequence[Example], metric: str = "loss") -> dict[str, float]:
    """`score` on each domain of a mixed set, sorted by domain name.

    >>> from peftlab import load_base
    >>> sorted(scores_by_domain(load_base(), mixed_task()["test"][:8]))
    ['python', 'sql']
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    groups = by_domain(examples)
    return {d: score(model, groups[d], metric) for d in sorted(groups)}


def train_adapters(model: nn.Module, tasks: Mapping[str, Sequence[Example]],
                   add: Callable[[nn.Module, str], object], *, steps: int, lr: float,
                   batch_size: int = 16, seed: int = 0) -> dict[str, History]:
    """For each task, in order: `add(model, name)` a new adapter (which must make it the only
    trainable part, as `lora.add` and `adapters.add` do), then `train` it on the task's data.
    The global RNG is seeded with `seed` first, so adapter initialisation is reproducible.

    >>> from peftlab import load_base
    >>> model = load_base()
    >>> add = lambda m, name: lora.add(m, r=4, name=name)
    >>> hist = train_adapters(model, {"sql": data.sql_task()["train"]}, add, steps=2, lr=1e-3)
    >>> lora.adapter_names(model), hist["sql"].steps
    (['sql'], 2)
    """
    if not isinstance(tasks, Mapping) or not tasks:
        raise ValueError(f"tasks must be a non-empty mapping {{adapter name: examples}}, got {tasks!r}")
    if not callable(add):
        raise TypeError(f"add must be a function add(model, name) that adds a trainable adapter, got {add!r}")
    positive_int(steps, "steps")
    torch.manual_seed(seed)  # the adapters' random init (A of LoRA, W_down of an adapter)
    histories = {}
    for name, examples in tasks.items():
        add(model, name)
        histories[name] = train(model, examples, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                                progress=False)
    return histories


def active_lora(model: nn.Module) -> str | None:
    return next((m.active for m in model.modules() if isinstance(m, lora.LoRALinear)), None)


def combine_scores(model: nn.Module, weights: dict[str, float], eval_sets: Mapping[str, Sequence[Example]],
                   method: str = "linear", rank: int | None = None, metric: str = "loss",
                   name: str = "combined") -> dict:
    """Combine LoRA adapters with `lora.combine` into a temporary adapter `name`, score it on
    each evaluation set, then delete it and make the adapter active before active again.

    Returns {"scores": {set name: score}, "r": the combined adapter's rank, "parameters": its
    parameter count, "max_error" and "mean_error": `lora.combine`'s relative error of B A
    against the weighted sum of the deltas}.

    >>> from peftlab import load_base
    >>> model = lora.add(lora.add(load_base(), name="a"), name="b")
    >>> r = combine_scores(model, {"a": 1, "b": 1}, {"sql": data.sql_task()["test"][:4]}, method="cat")
    >>> r["r"], r["max_error"] < 1e-6, lora.adapter_names(model)
    (16, True, ['a', 'b'])
    """
    if not isinstance(eval_sets, Mapping) or not eval_sets:
        raise ValueError(f"eval_sets must be a non-empty mapping {{set name: examples}}, got {eval_sets!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    previous = active_lora(model)
    report = lora.combine(model, weights, name, method=method, rank=rank)  # validates the rest
    try:
        layers = [m for m in model.modules() if isinstance(m, lora.LoRALinear) and name in m.config]
        shape = {"r": layers[0].lora_A[name].shape[0],
                 "parameters": sum(m.lora_A[name].numel() + m.lora_B[name].numel() for m in layers)}
        scores = {k: score(model, v, metric) for k, v in eval_sets.items()}
    finally:
        lora.delete(model, name)
        if previous in lora.adapter_names(model):
            lora.set_active(model, previous)
    return {"scores": scores, **shape, "max_error": report["max_error"], "mean_error": report["mean_error"]}


def fusion_weights_for(model: nn.Module, text: str) -> torch.Tensor:
    """The active fusion's weights on each token of `text` (no padding, one forward):
    shape (n_fusion_layers, n_tokens, n_adapters).

    >>> from peftlab.model import ModelConfig, Transformer
    >>> model = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64))
    >>> model = adapters.add(adapters.add(model, 4, name="a"), 4, name="b"); adapters.add_fusion(model, ["a", "b"])
    >>> fusion_weights_for(model, "SELECT").shape
    torch.Size([2, 6, 2])
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"text must be a non-empty string, got {text!r}")
    ids = torch.tensor([ByteTokenizer().encode(text)], device=next(model.parameters()).device)
    return adapters.fusion_weights(model, ids)[:, 0]


def mean_fusion_weights(model: nn.Module, examples: Sequence[Example]) -> dict[str, list[float]]:
    """Per domain, the fusion weight on each fused adapter, averaged over every token of every
    example (prompt and response) and every fusion layer; each list sums to 1.

    >>> from peftlab.model import ModelConfig, Transformer
    >>> model = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64))
    >>> model = adapters.add(adapters.add(model, 4, name="a"), 4, name="b"); adapters.add_fusion(model, ["a", "b"])
    >>> w = mean_fusion_weights(model, mixed_task()["test"][:6]); round(sum(w["sql"]), 6)
    1.0
    """
    out = {}
    for domain, group in by_domain(examples).items():
        per_token = torch.cat([fusion_weights_for(model, e.text).flatten(0, 1) for e in group])  # (tokens, N)
        out[domain] = per_token.double().mean(0).tolist()
    return dict(sorted(out.items()))


# PEFT's `add_weighted_adapter` combinations beyond cat / linear / svd. The plain ones trim, drop and elect on the A
# and B factors separately; the *_svd ones on each layer's product Delta W (the papers' task vectors), then
# factorise the result back to rank `rank` by SVD.
PEFT_MERGES = ("ties", "dare_linear", "dare_ties", "magnitude_prune", "ties_svd", "dare_linear_svd", "dare_ties_svd",
               "magnitude_prune_svd")


def merge_adapters(base: nn.Module, adapted: Mapping[str, nn.Module], weights: Mapping[str, float],
                   kind: str = "cat", *, density: float | None = None, rank: int | None = None,
                   seed: int = 0) -> nn.Module:
    """One model from LoRA adapters trained separately on copies of `base` (each holding its adapter as
    "default"): a copy of `base` with every adapter loaded under its key in `adapted`, combined with
    `weights` into one active adapter by `lora.combine` (kind "cat", "linear" or "svd"), or the merged
    weights of PEFT's `add_weighted_adapter` (a kind of `PEFT_MERGES`, `density` the share kept, `rank` for
    the *_svd kinds; seeded: DARE drops at random). `base` and the adapted models are never changed.

    >>> from peftlab.model import ModelConfig, Transformer
    >>> base = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> adapted = {name: lora.add(copy.deepcopy(base), r=2) for name in ("a", "b")}
    >>> merged = merge_adapters(base, adapted, {"a": 1.0, "b": 0.5}, "cat")
    >>> lora.adapter_names(merged)
    ['a', 'b', 'merged']
    """
    import tempfile
    from pathlib import Path

    if not isinstance(weights, Mapping) or not weights or set(weights) - set(adapted):
        raise ValueError(f"weights must be a non-empty mapping over the adapted models {list(adapted)}, got {weights!r}")
    if kind not in (*lora.METHODS, *PEFT_MERGES):
        raise ValueError(f"kind must be one of {(*lora.METHODS, *PEFT_MERGES)}, got {kind!r}")
    with tempfile.TemporaryDirectory() as tmp:
        if kind in lora.METHODS:
            model = copy.deepcopy(base)
            for name in weights:
                lora.load(model, lora.save(adapted[name], Path(tmp) / name), name=name)
            lora.combine(model, dict(weights), "merged", method=kind, rank=rank)
            return model
        import peft  # the hf extra; only the PEFT merges need it
        from . import hf

        for name in weights:
            lora.save(adapted[name], Path(tmp) / name, format="peft")
        names = list(weights)
        peft_model = peft.PeftModel.from_pretrained(hf.to_hf(copy.deepcopy(base)), Path(tmp) / names[0],
                                                    adapter_name=names[0])
        for name in names[1:]:
            peft_model.load_adapter(Path(tmp) / name, adapter_name=name)
        torch.manual_seed(seed)
        peft_model.add_weighted_adapter(names, [float(weights[n]) for n in names], "merged", combination_type=kind,
                                        density=density, **({"svd_rank": rank} if kind.endswith("svd") else {}))
        peft_model.set_adapter("merged")
        return hf.from_hf(peft_model.merge_and_unload()).to(next(base.parameters()).device)
