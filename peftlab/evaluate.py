"""The evaluations every notebook uses: loss, exact match (by generation, or in one teacher-forced
pass), token accuracy, and the completions behind them.

Each takes a model and a non-empty list of examples, runs in eval mode without gradients, and
leaves `model.training` as it found it.

* `evaluate_loss`: mean next-token loss per target token (perplexity = exp of it);
* `exact_match`: the fraction of greedy continuations that give the whole response (`matches`);
* `greedy_accuracy`: the same count from one forward pass instead of token-by-token generation;
* `token_accuracy`: the fraction of response tokens that are the model's top prediction;
* `ranking_accuracy`: the fraction of examples whose true response is the most likely of its choices.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .data import Example
from .tokenizer import ByteTokenizer
from .train import IGNORE, LOSS_ON, collate, lm_loss


def check_examples(examples: Sequence, param: str = "examples") -> None:
    """A clear error for an empty evaluation set, before the model runs."""
    if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence):
        raise ValueError(f"{param} must be a list of examples, got {type(examples).__name__}")
    if len(examples) == 0:
        raise ValueError(f"{param} is empty: an evaluation needs at least one example")


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no gradients inside the block; the model's training flag is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def evaluate_loss(model: nn.Module, data: Sequence[Example | str], batch_size: int = 32,
                  loss_on: str = "all") -> float:
    """Mean next-token loss per target token over `data` (perplexity = exp of it).

    >>> from peftlab import load_base, data
    >>> round(evaluate_loss(load_base(), data.fact_completion()[:4]), 3) < 1.0
    True
    """
    check_examples(data, "data")
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
    tok, total, count = ByteTokenizer(), 0.0, 0
    with evaluating(model):
        device = _device(model)
        for i in range(0, len(data), batch_size):
            ids, labels = (t.to(device) for t in collate(data[i:i + batch_size], tok, loss_on))
            n = int((labels[:, 1:] != IGNORE).sum())
            total += lm_loss(model(ids), labels).item() * n
            count += n
    return total / count


def perplexity(model: nn.Module, data: Sequence[Example | str], batch_size: int = 32) -> float:
    """exp(`evaluate_loss`) over every token of `data`."""
    return math.exp(evaluate_loss(model, data, batch_size))


def complete(model: nn.Module, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 64,
             **generate_kwargs) -> list[str]:
    """Greedy (or sampled) continuations of each prompt, `max_new_tokens` bytes long.

    Prompts of equal length are generated together, so no padding ever enters the model.

    >>> from peftlab import load_base
    >>> [c[:7] for c in complete(load_base(), ["Tevel lives in"], 8)]
    [' Ostrel']
    """
    check_examples(prompts, "prompts")
    empty = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p]
    if empty:
        raise ValueError(f"prompts must be non-empty strings (generation continues a text); prompts {empty} are not")
    tok = ByteTokenizer()
    encoded = [tok.encode(p) for p in prompts]
    out: list[str] = [""] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_len.setdefault(len(ids), []).append(i)
    with evaluating(model):
        device = _device(model)
        for group in by_len.values():
            for j in range(0, len(group), batch_size):
                rows = group[j:j + batch_size]
                ids = torch.tensor([encoded[r] for r in rows], device=device)
                gen = model.generate(ids, max_new_tokens, **generate_kwargs)
                for r, g in zip(rows, gen):
                    out[r] = tok.decode(g[ids.shape[1]:])
    return out


def matches(prediction: str, response: str) -> bool:
    """Does the continuation give the response, as a whole word? " Varn" matches " Varn, so" and
    " Varn." but not " Varna"; a response ending in a terminator (" Varn\\n") must match it too.

    >>> matches(" Varn, so", " Varn"), matches(" Varna", " Varn")
    (True, False)
    """
    if not prediction.startswith(response):
        return False
    rest = prediction[len(response):]
    return not (response[-1:].isalnum() and rest[:1].isalnum())


def exact_match(model: nn.Module, examples: Sequence[Example], return_predictions: bool = False):
    """Fraction of examples whose greedy continuation gives the full response (see `matches`).

    >>> from peftlab import load_base, data
    >>> exact_match(load_base(), data.fact_completion()[:8])  # 7 of the first 8 facts, completed greedily
    0.875
    """
    check_examples(examples)
    tok = ByteTokenizer()
    width = max(len(tok.encode(e.response)) for e in examples) + 1
    preds = complete(model, [e.prompt for e in examples], width)
    hits = [matches(p, e.response) for p, e in zip(preds, examples)]
    acc = sum(hits) / len(examples)
    return (acc, preds) if return_predictions else acc


# byte id -> does it decode to a letter or digit (the bytes of a multi-byte character never do alone)
_ALNUM = torch.tensor([chr(b).isalnum() if b < 128 else False for b in range(256)] + [False] * 3)


def greedy_accuracy(model: nn.Module, examples: Sequence[Example], batch_size: int = 256) -> float:
    """The fraction of examples that `exact_match` counts as right, computed in one teacher-forced
    forward pass instead of token-by-token generation: greedy decoding writes the response exactly
    when, at every response position, the argmax given the true prefix is the true next token; and,
    as `matches` asks for a whole word, the token after a response that ends in a letter or digit
    must not be another one. (Several times faster on a CPU for probe-sized sets, where generation
    is dominated by per-token overhead.)

    >>> from peftlab import load_base, data
    >>> facts = data.fact_completion()[:40]
    >>> greedy_accuracy(load_base(), facts) == exact_match(load_base(), facts)
    True
    """
    check_examples(examples)
    tok, hits = ByteTokenizer(), 0
    with evaluating(model):
        device = _device(model)
        alnum = _ALNUM.to(device)
        for i in range(0, len(examples), batch_size):
            chunk = examples[i:i + batch_size]
            ids, labels = collate(chunk, tok, loss_on="response")  # labels: response tokens, then EOS
            ids, labels = ids.to(device), labels.to(device)
            predicted = model(ids)[:, :-1].argmax(-1)  # (batch, seq - 1): the greedy token after each prefix
            target = labels[:, 1:]
            inside = (target != IGNORE) & (target != tok.eos_id)
            after = target == tok.eos_id  # the position right after the response
            whole_word = torch.tensor([e.response[-1:].isalnum() for e in chunk], device=device)[:, None]
            wrong = (inside & (predicted != target)) | (after & whole_word & alnum[predicted])
            hits += int((~wrong.any(dim=1)).sum())
    return hits / len(examples)


def token_accuracy(model: nn.Module, examples: Sequence[Example], batch_size: int = 32) -> float:
    """The fraction of response tokens (the end-of-text token included) that are the model's top
    prediction given the true text before them: teacher-forced, so one forward pass per batch,
    where `exact_match` generates token by token and needs every token of a response right.

    >>> from peftlab import load_base, data
    >>> 0.0 <= token_accuracy(load_base(), data.sql_task()["test"][:4]) <= 1.0
    True
    """
    check_examples(examples)
    tok, hits, total = ByteTokenizer(), 0, 0
    with evaluating(model):
        device = _device(model)
        for i in range(0, len(examples), batch_size):
            ids, labels = (t.to(device) for t in collate(examples[i:i + batch_size], tok, "response"))
            predicted, target = model(ids)[:, :-1].argmax(-1), labels[:, 1:]  # logits at t predict token t + 1
            scored = target != IGNORE
            hits += int((predicted == target)[scored].sum())
            total += int(scored.sum())
    return hits / total


def ranking_accuracy(model: nn.Module, examples: Sequence[Example], choices: Sequence[Sequence[str]],
                     batch_size: int = 256) -> float:
    """The fraction of examples whose true response is, among `choices[i]` (the candidates for example i,
    the true response among them), the most likely continuation of the prompt: the sum of the
    log-probabilities of its tokens given the prompt. Chance is 1 / len(choices[i]).

    Greedy exact match fails both when a model has lost a fact and when its output is hijacked (a model
    tuned on DNA answers in DNA letters); the ranking still finds a fact that the model keeps but no longer
    says first. Ties go to the first of the choices.

    >>> from peftlab import load_base, data
    >>> facts = data.fact_completion()[:40]
    >>> ranking_accuracy(load_base(), facts, [[f" {v}" for v in data.ATTRIBUTES[e.meta["attribute"]]] for e in facts]) > 0.8
    True
    """
    check_examples(examples)
    if len(choices) != len(examples):
        raise ValueError(f"choices must give one list of candidates per example: {len(examples)} examples, "
                         f"{len(choices)} lists")
    for i, (e, c) in enumerate(zip(examples, choices)):
        if e.response not in c:
            raise ValueError(f"choices[{i}] must contain the true response {e.response!r}, got {list(c)[:4]}...")
    pairs = [Example(e.prompt, c) for e, cs in zip(examples, choices) for c in cs]
    tok, scores = ByteTokenizer(), []
    with evaluating(model):
        device = _device(model)
        for i in range(0, len(pairs), batch_size):
            ids, labels = (t.to(device) for t in collate(pairs[i:i + batch_size], tok, "response"))
            target = labels[:, 1:]
            scored = (target != IGNORE) & (target != tok.eos_id)  # the candidate's own tokens, not the end
            logp = model(ids)[:, :-1].log_softmax(-1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
            scores += (logp * scored).sum(dim=1).tolist()
    hits, at = 0, 0
    for e, cs in zip(examples, choices):
        mine = scores[at:at + len(cs)]
        hits += list(cs)[mine.index(max(mine))] == e.response
        at += len(cs)
    return hits / len(examples)
