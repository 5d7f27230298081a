"""One training loop for every method, and the evaluations that go with it.

Full fine-tuning, LoRA, QLoRA and the prompt methods all train through `train()`: the loop
only ever optimises the parameters that have `requires_grad=True`, so a method is defined by
what it adds and what it freezes, never by a loop of its own.

Batches are (ids, labels) pairs of shape (batch, seq). Labels equal the ids, with -100 on
positions that carry no loss (padding, and the prompt when the loss is on the response only).
The loss is next-token cross-entropy: logits at position t predict labels at t + 1.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checks import int_at_least, positive_int, positive_number
from .data import Example
from .tokenizer import ByteTokenizer

IGNORE = -100
PRECISIONS = ("fp32", "bf16", "fp16")
LOSS_ON = ("response", "all")
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class History:
    """What `train()` returns: loss per optimizer step, throughput and wall time.

    >>> h = History(loss=[2.0, 1.0], tokens=100, wall_time=2.0)
    >>> h.steps, h.tokens_per_s
    (2, 50.0)
    """

    loss: list[float] = field(default_factory=list)
    tokens: int = 0
    wall_time: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_time if self.wall_time else 0.0

    @property
    def steps(self) -> int:
        return len(self.loss)


def encode_example(ex: Example | str, tok: ByteTokenizer, loss_on: str) -> tuple[list[int], list[int]]:
    """Token ids and labels for one example; a plain string is a document with loss on all of it.

    >>> from peftlab.data import Example
    >>> ids, labels = encode_example(Example("Q:", " No"), ByteTokenizer(), "response")
    >>> ids, labels  # the prompt's labels are IGNORE; the response ends with EOS (258)
    ([81, 58, 32, 78, 111, 258], [-100, -100, 32, 78, 111, 258])
    """
    if isinstance(ex, str):
        ids = tok.encode(ex, eos=True)
        return ids, list(ids)
    prompt, response = tok.encode(ex.prompt), tok.encode(ex.response, eos=True)
    labels = ([IGNORE] * len(prompt) if loss_on == "response" else prompt) + response
    return prompt + response, labels


def collate(items: Sequence[Example | str], tok: ByteTokenizer, loss_on: str = "response") -> Batch:
    """Right-pad a list of examples into (ids, labels); padding carries no loss.

    >>> from peftlab.data import Example
    >>> ids, labels = collate([Example("Q: Hi?\\nA:", " Yes"), Example("Q:", " No")], ByteTokenizer())
    >>> ids.shape, labels[1].tolist()[-3:]  # right-padded, padding carries no loss
    (torch.Size([2, 14]), [-100, -100, -100])
    """
    encoded = [encode_example(x, tok, loss_on) for x in items]
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), tok.pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    for row, (x, y) in enumerate(encoded):
        ids[row, :len(x)], labels[row, :len(y)] = torch.tensor(x), torch.tensor(y)
    return ids, labels


def example_batches(data: Sequence[Example | str], batch_size: int, loss_on: str = "response",
                    seed: int = 0, tok: ByteTokenizer | None = None) -> Iterator[Batch]:
    """Endless shuffled batches, each epoch a new permutation (seeded); `batch_size` at most `len(data)`.

    >>> from peftlab import data
    >>> ids, labels = next(example_batches(data.qa_task()["train"], batch_size=4))
    >>> ids.shape[0], labels.shape == ids.shape
    (4, True)
    """
    if batch_size > len(data):
        raise ValueError(f"batch_size={batch_size} is larger than the {len(data)} examples in data; "
                         f"pass batch_size <= {len(data)}")
    tok, rng, order = tok or ByteTokenizer(), random.Random(seed), []
    while True:
        if len(order) < batch_size:
            perm = list(range(len(data)))
            rng.shuffle(perm)
            order += perm
        chosen, order = order[:batch_size], order[batch_size:]
        yield collate([data[i] for i in chosen], tok, loss_on)


def packed_batches(docs: Sequence[str], batch_size: int, seq_len: int, seed: int = 0,
                   tok: ByteTokenizer | None = None) -> Iterator[Batch]:
    """Endless batches of random windows from the documents joined by newlines (pre-training).

    >>> ids, labels = next(packed_batches(["abc def"] * 10, batch_size=2, seq_len=8))
    >>> ids.shape, torch.equal(ids, labels)
    (torch.Size([2, 8]), True)
    """
    tok = tok or ByteTokenizer()
    stream = torch.tensor(tok.encode("\n".join(docs) + "\n"), dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(stream) - seq_len, (batch_size,), generator=gen)
        ids = torch.stack([stream[s:s + seq_len] for s in starts.tolist()])
        yield ids, ids.clone()


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not IGNORE.

    >>> round(lm_loss(torch.zeros(1, 3, 259), torch.tensor([[1, 2, 3]])).item(), 4)  # uniform: ln 259
    5.5568
    """
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)


def autocast(precision: str, device: torch.device):
    """The autocast context for a precision; fp32 is a no-op.

    >>> with autocast("bf16", torch.device("cpu")):
    ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    torch.bfloat16
    """
    check_precision(precision, device)
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_precision(precision: str, device: torch.device) -> None:
    """A clear error for a precision this device cannot train in.

    >>> check_precision("fp16", torch.device("cpu"))
    Traceback (most recent call last):
    ...
    ValueError: precision='fp16' needs a CUDA GPU (fp16 training uses loss scaling on the GPU); on this device use precision='bf16'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' needs a CUDA GPU (fp16 training uses loss scaling on the GPU); "
                         "on this device use precision='bf16'")


class NonFiniteLoss(ValueError):
    """Training diverged: the loss of step `step` is NaN or infinite (raised before that step's update)."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"the loss became {loss} at step {step}: training diverged (a learning rate too high, "
                         f"or NaN/inf weights or inputs); the model keeps the weights of step {step - 1}")
        self.step, self.loss = step, loss


def _as_batches(data, batch_size: int, loss_on: str, seed: int) -> Iterator[Batch]:
    if isinstance(data, (str, bytes)):
        raise ValueError("data must be a list of Examples or documents (or an iterator of (ids, labels) batches), "
                         "got one string; wrap it in a list to train on it as one document")
    if isinstance(data, Sequence) and not isinstance(data, torch.Tensor):
        if len(data) == 0:
            raise ValueError("`data` is empty")
        if batch_size > len(data):  # a batch cannot hold more distinct examples than there are
            raise ValueError(f"batch_size={batch_size} is larger than the {len(data)} examples in data; "
                             f"pass batch_size <= {len(data)}")
        return example_batches(data, batch_size, loss_on, seed)
    return iter(data)


def train(model: torch.nn.Module, data: Sequence[Example | str] | Iterable[Batch], *, steps: int,
          lr: float = 1e-3, batch_size: int = 16, grad_accum: int = 1, loss_on: str = "response",
          precision: str = "fp32", gradient_checkpointing: bool = False, warmup_steps: int = 0,
          schedule: str = "constant", weight_decay: float = 0.0, max_grad_norm: float | None = 1.0,
          optimizer: torch.optim.Optimizer | None = None, seed: int = 0, progress: bool = True,
          on_step: Callable[[int, float], None] | None = None) -> History:
    """Train the parameters of `model` that require grad; returns a `History`.

    `data` is a list of `Example`s (or documents) batched here, or an iterator of (ids, labels).
    The effective batch is `batch_size * grad_accum`. `schedule` is "constant" or "cosine"
    (after `warmup_steps` of linear warm-up). `on_step(step, loss)` is called after every
    optimizer step (1-based), for logging or a live plot. A NaN or infinite loss stops training
    with `NonFiniteLoss` before that step's update, so NaN never spreads into the weights.

    >>> from peftlab import load_base, data
    >>> model = load_base()
    >>> hist = train(model, data.qa_task()["train"], steps=2, progress=False)
    >>> hist.steps
    2
    >>> train(model, data.qa_task()["train"], steps="3")
    Traceback (most recent call last):
    ...
    peftlab.checks.ArgumentError: steps must be a positive int, got '3'
    """
    for value, param in ((steps, "steps"), (batch_size, "batch_size"), (grad_accum, "grad_accum")):
        positive_int(value, param)
    int_at_least(warmup_steps, "warmup_steps", 0)
    int_at_least(seed, "seed", 0)
    if optimizer is None:
        positive_number(lr, "lr")
    if max_grad_norm is not None:
        positive_number(max_grad_norm, "max_grad_norm")
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    device = next(model.parameters()).device
    check_precision(precision, device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (every parameter has requires_grad=False)")
    batches = _as_batches(data, batch_size, loss_on, seed)  # checks the data before any state changes
    was_training = model.training
    if hasattr(model, "set_gradient_checkpointing"):
        model.set_gradient_checkpointing(gradient_checkpointing)
    torch.manual_seed(seed)
    opt = optimizer or torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, steps - warmup_steps)))
        return 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    history = History()
    model.train()
    start = time.perf_counter()
    try:
        for _ in tqdm(range(steps), disable=not progress, desc="train", leave=False):
            total = 0.0
            for _ in range(grad_accum):
                try:
                    ids, labels = (t.to(device) for t in next(batches))
                except StopIteration:
                    raise ValueError(f"data ran out after {history.steps} of {steps} steps: an iterator of batches "
                                     f"must yield steps * grad_accum = {steps * grad_accum} of them") from None
                with autocast(precision, device):
                    loss = lm_loss(model(ids), labels) / grad_accum
                (scaler.scale(loss) if scaler else loss).backward()
                total += loss.item()
                history.tokens += int((labels != IGNORE).sum())
            if not math.isfinite(total):
                raise NonFiniteLoss(history.steps + 1, total)
            if scaler:
                scaler.unscale_(opt)
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            history.loss.append(total)
            if on_step is not None:
                paused = time.perf_counter()
                on_step(history.steps, total)
                start += time.perf_counter() - paused  # the callback's time is not training time
    except BaseException:  # a failure halfway leaves the mode, and checkpointing, as they were
        model.train(was_training)
        if hasattr(model, "set_gradient_checkpointing"):
            model.set_gradient_checkpointing(False)
        raise
    if device.type == "cuda":
        torch.cuda.synchronize()
    history.wall_time = time.perf_counter() - start
    if hasattr(model, "set_gradient_checkpointing"):
        model.set_gradient_checkpointing(False)
    model.eval()
    return history
