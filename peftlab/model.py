"""A Llama-style decoder in plain PyTorch, readable top to bottom.

Pieces, each one class, in the order data flows through them:

* `RMSNorm` (Zhang & Sennrich 2019): x / sqrt(mean(x^2) + eps) * g, no mean subtraction, no bias.
* rotary position embeddings (Su et al. 2021, RoPE): queries and keys are rotated by an angle
  proportional to their position, so q.k depends on the distance between tokens. We use the
  "rotate half" layout of Hugging Face's Llama so that weights convert one to one.
* `Attention`: causal multi-head attention through `F.scaled_dot_product_attention`.
* `MLP`: SwiGLU (Shazeer 2020), down(silu(gate(x)) * up(x)).
* `Block`: pre-norm residual block, x + attn(norm(x)), then x + mlp(norm(x)).
* `Transformer`: embeddings, blocks, final norm, `lm_head`.

Module names follow Llama (`embed_tokens`, `q_proj`, ..., `lm_head`), so LoRA target names and
Hugging Face conversion work unchanged. Hooks for the later methods are designed in:

* `inputs_embeds=` instead of token ids (prompt tuning, P-tuning);
* `prefix_kv=`: extra keys and values per layer, already rotated, that every query may attend
  to (prefix tuning; the same mechanism is the KV cache used by `generate`);
* `block.checkpoint = True` recomputes that block's activations in the backward pass
  (gradient checkpointing, Chen et al. 2016), switched per block.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .checks import int_at_least, positive_int, positive_number

KV = tuple[torch.Tensor, torch.Tensor]  # keys, values: (batch, n_heads, length, head_dim)


@dataclass(frozen=True)
class ModelConfig:
    """The decoder's shape; the defaults are the shipped base model's.

    >>> cfg = ModelConfig()
    >>> cfg.d_model, cfg.n_layers, cfg.head_dim
    (256, 4, 32)
    """

    vocab_size: int = 259
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 8
    d_ff: int = 688  # SwiGLU hidden size, about 8/3 * d_model as in Llama
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
            positive_int(getattr(self, name), name)
        positive_number(self.rope_theta, "rope_theta")
        positive_number(self.norm_eps, "norm_eps")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model must split into n_heads heads of an even width (RoPE rotates pairs): "
                             f"d_model={self.d_model}, n_heads={self.n_heads}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * g over the last dimension.

    >>> RMSNorm(4, 1e-5)(torch.full((1, 4), 3.0)).round(decimals=4).tolist()
    [[1.0, 1.0, 1.0, 1.0]]
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()  # normalise in fp32 even under autocast, as Llama does
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of angle position * theta^(-2i/head_dim), shape (seq, head_dim).

    >>> cos, sin = rotary_cos_sin(torch.arange(5), head_dim=8, theta=10000.0)
    >>> cos.shape, cos[0].tolist() == [1.0] * 8  # position 0: no rotation
    (torch.Size([5, 8]), True)
    """
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (seq, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # (seq, head_dim), "rotate half" layout
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i + d/2}) by its angle ("rotate half" layout).

    >>> cos, sin = rotary_cos_sin(torch.arange(3), 4, 10000.0)
    >>> x = torch.randn(1, 1, 3, 4)  # (batch, heads, seq, head_dim)
    >>> torch.allclose(apply_rotary(x, cos, sin).norm(dim=-1), x.norm(dim=-1))  # a rotation keeps the norm
    True
    """
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    """Causal multi-head self-attention with rotary positions; returns the output and this layer's (keys, values).

    >>> cfg = ModelConfig(d_model=32, n_heads=2, d_ff=64)
    >>> cos, sin = rotary_cos_sin(torch.arange(5), cfg.head_dim, cfg.rope_theta)
    >>> out, (k, v) = Attention(cfg)(torch.randn(1, 5, 32), cos, sin)
    >>> out.shape, k.shape  # keys: (batch, heads, seq, head_dim)
    (torch.Size([1, 5, 32]), torch.Size([1, 2, 5, 16]))
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.o_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                prefix: KV | None = None) -> tuple[torch.Tensor, KV]:
        b, s, d = x.shape
        # (batch, seq, d_model) -> (batch, n_heads, seq, head_dim)
        q, k, v = (proj(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if prefix is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            p = prefix[0].shape[2]
            k = torch.cat([prefix[0].to(k.dtype).expand(b, -1, -1, -1), k], dim=2)
            v = torch.cat([prefix[1].to(v.dtype).expand(b, -1, -1, -1), v], dim=2)
            # query i sees every prefix position and sequence positions <= i
            mask = torch.ones(s, p + s, dtype=torch.bool, device=x.device).tril(diagonal=p)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(b, s, d)
        return self.o_proj(out), (k, v)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)).

    >>> MLP(ModelConfig(d_model=32, d_ff=64))(torch.randn(2, 5, 32)).shape
    torch.Size([2, 5, 32])
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """

    >>> cfg = ModelConfig(d_model=32, n_heads=2, d_ff=64)
    >>> cos, sin = rotary_cos_sin(torch.arange(5), cfg.head_dim, cfg.rope_theta)
    >>> x, _ = Block(cfg)(torch.randn(1, 5, 32), cos, sin)
    >>> x.shape
    torch.Size([1, 5, 32])
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.checkpoint = False  # gradient checkpointing switch for this block
        self.use_reentrant = False  # True only to show the frozen-embedding failure (notebook 15)

    def _forward(self, x, cos, sin, prefix):
        h, kv = self.self_attn(self.input_layernorm(x), cos, sin, prefix)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), kv

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                prefix: KV | None = None) -> tuple[torch.Tensor, KV]:
        if self.checkpoint and torch.is_grad_enabled():
            # use_reentrant=False: works when the block's input does not require grad
            # (a frozen embedding), where the reentrant variant fails with
            # "element 0 of tensors does not require grad".
            return checkpoint(self._forward, x, cos, sin, prefix, use_reentrant=self.use_reentrant)
        return self._forward(x, cos, sin, prefix)


class Transformer(nn.Module):
    """The decoder. `model(ids)` returns logits of shape (batch, seq, vocab).

    >>> m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> m(torch.zeros(2, 5, dtype=torch.long)).shape
    torch.Size([2, 5, 259])
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.segment = 1  # blocks per checkpointed segment (`set_gradient_checkpointing`); 1: per block
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def set_gradient_checkpointing(self, enabled: bool = True, blocks: list[int] | None = None,
                                   segment: int = 1) -> None:
        """Recompute activations in the backward pass for the given blocks (default: all).

        `segment=k` > 1 checkpoints every run of k consecutive blocks as one segment, as Chen et al. 2016
        do: only each segment's input is kept, and a whole segment is recomputed when its backward comes
        (k = sqrt(n) gives their O(sqrt n) memory). It applies to every block; `blocks` must be None.

        >>> m = Transformer(ModelConfig(d_model=32, n_layers=4, n_heads=2, d_ff=64))
        >>> m.set_gradient_checkpointing(True, segment=2); m.segment, m.layers[0].checkpoint
        (2, False)
        """
        if isinstance(segment, bool) or not isinstance(segment, int) or not 1 <= segment <= len(self.layers):
            raise ValueError(f"segment must be an int from 1 to the number of blocks ({len(self.layers)}), "
                             f"got {segment!r}")
        if segment > 1 and blocks is not None:
            raise ValueError("segment > 1 checkpoints every block in segments; pass blocks=None")
        self.segment = segment if enabled else 1
        for i, block in enumerate(self.layers):
            if blocks is None or i in blocks:
                block.checkpoint = enabled and segment == 1

    def _segment(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start: int) -> torch.Tensor:
        for block in self.layers[start:start + self.segment]:
            x, _ = block._forward(x, cos, sin, None)
        return x

    def _check_input(self, ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None,
                     prefix_len: int) -> int:
        if (ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of `ids` (token ids) or `inputs_embeds`")
        if ids is not None:
            if ids.dtype not in (torch.long, torch.int32) or ids.dim() != 2:
                raise ValueError(f"`ids` must be a 2-D tensor of int64 token ids (batch, seq), "
                                 f"got dtype {ids.dtype} with shape {tuple(ids.shape)}")
            seq = ids.shape[1]
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.d_model:
                raise ValueError(f"`inputs_embeds` must have shape (batch, seq, {self.config.d_model}), "
                                 f"got {tuple(inputs_embeds.shape)}")
            seq = inputs_embeds.shape[1]
        if seq + prefix_len > self.config.max_seq_len:
            raise ValueError(f"sequence of {seq} tokens" + (f" plus {prefix_len} prefix positions" if prefix_len else "")
                             + f" exceeds the model's context of max_seq_len={self.config.max_seq_len}")
        return seq

    def forward(self, ids: torch.Tensor | None = None, *, inputs_embeds: torch.Tensor | None = None,
                prefix_kv: list[KV] | None = None, return_kv: bool = False):
        """Logits (batch, seq, vocab); with `return_kv=True` also each layer's keys and values.

        `prefix_kv`: one (keys, values) pair per layer, each (batch or 1, n_heads, P, head_dim),
        already rotary-encoded for positions 0..P-1; the sequence then takes positions P..P+seq-1.
        """
        p = 0 if prefix_kv is None else prefix_kv[0][0].shape[2]
        seq = self._check_input(ids, inputs_embeds, p)
        x = self.embed_tokens(ids) if ids is not None else inputs_embeds  # (batch, seq, d_model)
        cos, sin = rotary_cos_sin(torch.arange(p, p + seq, device=x.device), self.config.head_dim,
                                  self.config.rope_theta)
        new_kv = []
        if self.segment > 1 and torch.is_grad_enabled() and prefix_kv is None and not return_kv:
            for start in range(0, len(self.layers), self.segment):  # Chen et al.'s segments
                x = checkpoint(self._segment, x, cos, sin, start, use_reentrant=False)
            return self.lm_head(self.norm(x))
        for i, block in enumerate(self.layers):
            x, kv = block(x, cos, sin, None if prefix_kv is None else prefix_kv[i])
            new_kv.append(kv)
        logits = self.lm_head(self.norm(x))  # (batch, seq, vocab)
        return (logits, new_kv) if return_kv else logits

    def generate(self, ids: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
        """`generate(self, ids, max_new_tokens, ...)`: see the module-level function."""
        return generate(self, ids, max_new_tokens, **kwargs)


@torch.no_grad()
def generate(model: nn.Module, ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, stop_ids: tuple[int, ...] = (),
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Continue `ids` (batch, seq) with `model`: greedy when temperature == 0, else sampled
    (optionally from the top_k tokens). Stops early once every row has produced one of `stop_ids`.
    Returns (batch, seq + new) ids; uses a KV cache.

    `model` is any module with the calling convention of `Transformer.forward`
    (`model(ids, prefix_kv=cache, return_kv=True)`) and a `config.max_seq_len`: the base model,
    or a wrapper such as prompt tuning's that puts virtual tokens in front.

    >>> m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> generate(m, torch.zeros(2, 3, dtype=torch.long), max_new_tokens=4).shape
    torch.Size([2, 7])
    """
    int_at_least(max_new_tokens, "max_new_tokens", 0)
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[1] == 0 or ids.dtype != torch.long:
        raise ValueError(f"ids must be a (batch, seq) tensor of token ids (torch.long, seq >= 1), got "
                         f"{tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__}"
                         f"{' ' + str(ids.dtype) if isinstance(ids, torch.Tensor) else ''}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= model.config.vocab_size):
        raise ValueError(f"ids must lie in [0, {model.config.vocab_size}) (the vocabulary), got values from "
                         f"{int(ids.min())} to {int(ids.max())}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < math.inf:
        raise ValueError(f"temperature must be a finite number >= 0 (0: greedy), got {temperature!r}")
    vocab = model.config.vocab_size
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= vocab):
        raise ValueError(f"top_k must be None or an int in 1..{vocab} (the vocabulary), got {top_k!r}")
    if ids.shape[1] + max_new_tokens > model.config.max_seq_len:
        raise ValueError(f"prompt of {ids.shape[1]} tokens plus max_new_tokens={max_new_tokens} exceeds "
                         f"the model's context of max_seq_len={model.config.max_seq_len}")
    modes = [(m, m.training) for m in model.modules()]  # a wrapper and its base can differ: restore each
    model.eval()
    try:
        out, cache, done = ids, None, torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        step_input = ids
        for _ in range(max_new_tokens):
            logits, cache = model(step_input, prefix_kv=cache, return_kv=True)
            logits = logits[:, -1, :].float()
            if temperature == 0.0:
                next_id = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, top_k).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                next_id = torch.multinomial(F.softmax(logits, -1), 1, generator=generator)
            out = torch.cat([out, next_id], dim=1)
            step_input = next_id
            if stop_ids:
                done |= torch.isin(next_id.squeeze(1), torch.tensor(stop_ids, device=ids.device))
                if done.all():
                    break
    finally:  # also after a failure halfway: every module back in the mode it had
        for m, training in modes:
            m.training = training
    return out
