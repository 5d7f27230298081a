"""Choosing the LoRA rank r: a sweep that trains one adapter per rank, and a widget that runs it live.

For each rank r the sweep takes a fresh copy of the base model, adds LoRA with `lora.add`, trains
it with the one training loop (`train.train`), and measures what a choice of r changes:

* trainable parameters: r * (in + out) per adapted layer (A is (r, in), B is (out, r));
* the adapter file: the bytes `lora.save` writes, growing linearly with r;
* the median time of one training step;
* the loss curve, the test loss on the responses, and exact-match accuracy on the test split.

The scaling of the update is alpha / r (Hu et al. 2021, arXiv:2106.09685, section 4.1) or
alpha / sqrt(r) (rsLoRA, Kalajdzievski 2023, arXiv:2312.03732). With alpha / r and a fixed alpha,
a larger r makes each direction's contribution smaller; rsLoRA's analysis shows that only
alpha / sqrt(r) keeps the size of the update and of its gradients steady as r grows.

`subspace_similarity` is the measure of the LoRA paper's section 7 for comparing the subspaces
learned at two ranks.

The logic is in plain functions (`sweep`, `check_settings`, `subspace_similarity`) and the widget
only draws what they return. The widget runs the sweep in a background thread, so the kernel keeps
handling the Stop button's click while training runs.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from . import data, lora
from .checks import positive_int, positive_number
from .checkpoint import load_base
from .measure import count_parameters
from .evaluate import evaluate_loss, exact_match
from .train import train

RANKS = (1, 2, 4, 8, 16, 32, 64)
MAX_RANK = 64
SCALINGS = {"alpha/r": False, "alpha/sqrt(r)": True}  # name -> rslora flag of lora.add
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
TARGETS = {"q_proj,v_proj": ("q_proj", "v_proj"), "q_proj": ("q_proj",), "all attention": ATTENTION,
           "all MLP": MLP, "all-linear": lora.ALL_LINEAR}
TASKS = {"qa": data.qa_task, "sql": data.sql_task}
DEFAULTS = {"ranks": (1, 4, 16), "scaling": "alpha/r", "targets": "q_proj,v_proj", "steps": 30, "lr": 3e-3,
            "alpha": 16.0, "task": "qa", "batch_size": 16}


class _Stopped(Exception):
    """Raised from the training callback when a stop was requested; caught by `sweep`."""


def check_settings(ranks: Sequence[int], scaling: str, targets: str | Sequence[str], steps: int, lr: float,
                   alpha: float = 16.0, task: str = "qa") -> dict:
    """Validate a sweep's settings; returns them normalised (ranks sorted and unique, targets resolved).

    `targets` is a preset name of `TARGETS` ("q_proj,v_proj", "all attention", "all-linear", ...),
    a comma-separated string of projection names, or a list of them.

    >>> check_settings([16, 4], "alpha/sqrt(r)", "q_proj,v_proj", steps=30, lr=3e-3)["ranks"]
    (4, 16)
    """
    if isinstance(ranks, (str, bytes)) or not isinstance(ranks, Sequence):
        raise TypeError(f"ranks must be a list of ints in 1..{MAX_RANK}, e.g. {DEFAULTS['ranks']}, got {ranks!r}")
    if len(ranks) == 0:
        raise ValueError(f"ranks is empty; pick at least one of {RANKS}")
    if any(isinstance(r, bool) or not isinstance(r, int) for r in ranks):
        raise TypeError(f"ranks must be ints in 1..{MAX_RANK}, got {list(ranks)}")
    outside = [r for r in ranks if not 1 <= r <= MAX_RANK]
    if outside:
        raise ValueError(f"ranks must lie in 1..{MAX_RANK}, got {outside} in {list(ranks)}")
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {tuple(SCALINGS)}, got {scaling!r}")
    positive_int(steps, "steps")
    positive_number(lr, "lr")
    positive_number(alpha, "alpha")
    if task not in TASKS:
        raise ValueError(f"task must be one of {tuple(TASKS)}, got {task!r}")
    return {"ranks": tuple(sorted(set(ranks))), "scaling": scaling, "targets": _resolve_targets(targets),
            "steps": steps, "lr": float(lr), "alpha": float(alpha), "task": task}


def _resolve_targets(targets) -> str | tuple[str, ...]:
    if isinstance(targets, str) and targets in TARGETS:
        return TARGETS[targets]
    names = targets.split(",") if isinstance(targets, str) else targets
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"targets must be one of {tuple(TARGETS)} or a comma-separated list of "
                        f"{ATTENTION + MLP}, got {targets!r}")
    names = tuple(n.strip() for n in names if n.strip())
    unknown = [n for n in names if n not in ATTENTION + MLP]
    if not names or unknown:
        raise ValueError(f"targets must be one of {tuple(TARGETS)} or a comma-separated list of "
                         f"{ATTENTION + MLP}, got {targets!r}")
    return names


def adapter_bytes(model: nn.Module, name: str = "default") -> int:
    """Bytes of the files `lora.save` writes for adapter `name` (weights + config; not the manifest of
    their hashes, a few hundred bytes of bookkeeping)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = lora.save(model, tmp, name=name)
        return sum((Path(path) / f).stat().st_size for f in lora.FILES["peftlab"])


def closed_form_parameters(model: nn.Module, name: str = "default") -> int:
    """sum over adapted layers of r * (in + out): the parameters of A (r, in) and B (out, r)."""
    return sum(m.config[name].r * (m.in_features + m.out_features)
               for m in model.modules() if isinstance(m, lora.LoRALinear) and name in m.config)


def train_rank(base: nn.Module, r: int, scaling: str = "alpha/r", targets="q_proj,v_proj", steps: int = 30,
               lr: float = 3e-3, alpha: float = 16.0, task: str = "qa", batch_size: int = 16, seed: int = 0,
               evaluate: bool = True, on_step: Callable[[int, float], None] | None = None) -> tuple[nn.Module, dict]:
    """Train one LoRA of rank `r` on a fresh copy of `base`; returns (the model with its adapter, a row).

    The row holds rank, trainable parameters (and their closed form), percent of the model,
    adapter_kb, step_ms (median), loss (the curve), final_loss (mean of the last 5 steps) and, with
    `evaluate`, test_loss (on the responses) and accuracy (exact match on the test split).

    >>> from peftlab import load_base
    >>> model, row = train_rank(load_base(), r=4, steps=2, evaluate=False)
    >>> row["trainable"] == row["closed_form"] == 4 * 4 * 2 * (256 + 256)  # 4 layers x (q, v)
    True
    """
    s = check_settings([r], scaling, targets, steps, lr, alpha, task)
    split = TASKS[task]()
    # A's init depends on (seed, r) only, not on what ran before; one stream per rank, because with
    # a shared one the first r rows of every rank's first A would be the same numbers
    torch.manual_seed(seed * MAX_RANK + r)
    model = copy.deepcopy(base)
    lora.add(model, r=r, alpha=alpha, targets=s["targets"], rslora=SCALINGS[scaling])
    step_times: list[float] = []
    last = [0.0]

    def timed(step: int, loss: float) -> None:
        step_times.append(time.perf_counter() - last[0])  # one step, without the callbacks' time
        if on_step is not None:
            on_step(step, loss)
        last[0] = time.perf_counter()

    last[0] = time.perf_counter()
    hist = train(model, split["train"], steps=steps, lr=lr, batch_size=batch_size, seed=seed, progress=False,
                 on_step=timed)
    count = count_parameters(model)
    row = {"rank": r, "scaling": scaling, "targets": targets, "trainable": count.trainable,
           "closed_form": closed_form_parameters(model), "percent": count.percent,
           "adapter_kb": adapter_bytes(model) / 1024, "step_ms": 1e3 * statistics.median(step_times),
           "loss": hist.loss, "final_loss": statistics.mean(hist.loss[-5:])}
    if evaluate:
        lora.merge(model)  # evaluate as served: W0 + scaling B A in one matrix, no extra matmuls
        row["test_loss"] = evaluate_loss(model, split["test"], loss_on="response")
        row["accuracy"] = exact_match(model, split["test"])
        lora.unmerge(model)
    return model, row


def sweep(ranks: Sequence[int] = DEFAULTS["ranks"], scaling: str = "alpha/r", targets="q_proj,v_proj",
          steps: int = 30, lr: float = 3e-3, *, alpha: float = 16.0, task: str = "qa", batch_size: int = 16,
          base: nn.Module | None = None, seed: int = 0, evaluate: bool = True, keep_models: bool = False,
          on_step: Callable[[int, int, float], None] | None = None,
          on_result: Callable[[dict], None] | None = None, stop: threading.Event | None = None) -> list[dict]:
    """Train one LoRA per rank (each on a fresh copy of the base) and return one row per rank.

    `on_step(rank, step, loss)` is called after every step, `on_result(row)` after every rank.
    When `stop` is set, the sweep ends after the current step and returns the rows of the ranks
    that finished. With `keep_models`, each row also holds its trained "model".

    >>> rows = sweep([1, 4], steps=2, evaluate=False)
    >>> [row["rank"] for row in rows], rows[1]["trainable"] == 4 * rows[0]["trainable"]
    ([1, 4], True)
    """
    s = check_settings(ranks, scaling, targets, steps, lr, alpha, task)
    if base is None:
        base = load_base()
    rows: list[dict] = []
    for r in s["ranks"]:
        def step_callback(step: int, loss: float, r: int = r) -> None:
            if stop is not None and stop.is_set():
                raise _Stopped  # train() has no stop flag; leaving through the callback ends it cleanly
            if on_step is not None:
                on_step(r, step, loss)

        if stop is not None and stop.is_set():
            break
        try:
            model, row = train_rank(base, r, scaling, targets, steps, lr, alpha, task, batch_size, seed,
                                    evaluate, on_step=step_callback)
        except _Stopped:
            break
        if keep_models:
            row["model"] = model
        rows.append(row)
        if on_result is not None:
            on_result(row)
    return rows


def subspace_similarity(A_small: torch.Tensor, A_large: torch.Tensor) -> torch.Tensor:
    """phi(i, j) = ||U_i^T V_j||_F^2 / min(i, j) for i <= r_small, j <= r_large (LoRA paper, section 7).

    U and V are the right-singular vectors of the two A matrices (each (r, in)), ordered by singular
    value; U_i holds the top i of them. phi is 1 when one span contains the other and 0 when they
    are orthogonal. Returns a (r_small, r_large) tensor whose [i-1, j-1] entry is phi(i, j).

    >>> A = torch.randn(2, 16)
    >>> round(subspace_similarity(A, torch.cat([A, torch.randn(2, 16)]))[1, 3].item(), 4)
    1.0
    """
    if A_small.dim() != 2 or A_large.dim() != 2 or A_small.shape[1] != A_large.shape[1]:
        raise ValueError(f"A_small and A_large must be (r, in) matrices with the same in, got "
                         f"{tuple(A_small.shape)} and {tuple(A_large.shape)}")
    U = torch.linalg.svd(A_small.detach().double(), full_matrices=False).Vh.T  # (in, r_small)
    V = torch.linalg.svd(A_large.detach().double(), full_matrices=False).Vh.T  # (in, r_large)
    overlap = (U.T @ V) ** 2  # (r_small, r_large): squared cosines between single directions
    cumulative = overlap.cumsum(0).cumsum(1)  # [i-1, j-1] = ||U_i^T V_j||_F^2
    i = torch.arange(1, U.shape[1] + 1, dtype=torch.float64)[:, None]
    j = torch.arange(1, V.shape[1] + 1, dtype=torch.float64)[None, :]
    return (cumulative / torch.minimum(i, j)).float()
