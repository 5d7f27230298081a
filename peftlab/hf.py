"""Conversion to and from Hugging Face transformers' `LlamaForCausalLM`.

peftlab's decoder uses Llama's layout and module names, so conversion is a renaming of the
state dict: peftlab's `layers.0.self_attn.q_proj.weight` is transformers'
`model.layers.0.self_attn.q_proj.weight`, and so on; `lm_head` keeps its name. This makes any
peftlab result checkable with Hugging Face tools (PEFT, generation, evaluation) on the very same
pretrained weights. transformers is an optional dependency (`pip install peftlab[hf]`).
"""

from __future__ import annotations

import torch

from .model import ModelConfig, Transformer


def hf_name(name: str) -> str:
    return name if name.startswith("lm_head") else f"model.{name}"


def _transformers():
    """transformers, or a clear error saying how to get it (an optional dependency)."""
    try:
        import transformers
    except ImportError as e:
        raise ImportError("peftlab.hf needs transformers, an optional dependency: pip install peftlab[hf] "
                          "(or pip install transformers)") from e
    return transformers


def hf_config(cfg: ModelConfig):
    """The `transformers.LlamaConfig` equivalent to a peftlab `ModelConfig`."""
    return _transformers().LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
                       num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                       num_key_value_heads=cfg.n_heads, max_position_embeddings=cfg.max_seq_len,
                       rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta, hidden_act="silu",
                       attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
                       pad_token_id=256, bos_token_id=257, eos_token_id=258)


def to_hf(model: Transformer):
    """A `transformers.LlamaForCausalLM` with the same weights (fp32, eval mode).

    >>> from peftlab import load_base
    >>> hf_model = to_hf(load_base())
    >>> type(hf_model).__name__
    'LlamaForCausalLM'
    """
    hf_model = _transformers().LlamaForCausalLM(hf_config(model.config))
    state = {hf_name(k): v.detach().float().clone() for k, v in model.state_dict().items()}
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "rotary_emb" not in k]
    if missing or unexpected:
        raise ValueError(f"state dict does not map onto LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
    return hf_model.eval()


def from_hf(hf_model) -> Transformer:
    """A peftlab `Transformer` from a `LlamaForCausalLM` (same weights, fp32, eval mode)."""
    c = hf_model.config
    if c.num_key_value_heads != c.num_attention_heads or getattr(c, "tie_word_embeddings", False):
        raise ValueError("from_hf supports Llama models without grouped-query attention and with untied "
                         f"embeddings; got num_key_value_heads={c.num_key_value_heads}, "
                         f"num_attention_heads={c.num_attention_heads}")
    rope = getattr(c, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))
    cfg = ModelConfig(vocab_size=c.vocab_size, d_model=c.hidden_size, n_layers=c.num_hidden_layers,
                      n_heads=c.num_attention_heads, d_ff=c.intermediate_size,
                      max_seq_len=c.max_position_embeddings, rope_theta=float(theta), norm_eps=c.rms_norm_eps)
    model = Transformer(cfg)
    hf_state = hf_model.state_dict()
    model.load_state_dict({k: hf_state[hf_name(k)].detach().float().clone() for k in model.state_dict()})
    return model.eval()


@torch.no_grad()
def max_logit_difference(model: Transformer, hf_model, ids: torch.Tensor) -> float:
    """Largest absolute difference between the two models' logits on `ids`."""
    return (model(ids) - hf_model(ids).logits).abs().max().item()
