import pytest
import torch

pytest.importorskip("transformers")
from peftlab.hf import from_hf, max_logit_difference, to_hf  # noqa: E402


def test_pretrained_base_matches_llama_for_causal_lm(base):
    ids = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
    hf_model = to_hf(base)
    assert type(hf_model).__name__ == "LlamaForCausalLM"
    assert max_logit_difference(base, hf_model, ids) < 1e-4


def test_round_trip_from_hf(tiny_model):
    for p in tiny_model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    back = from_hf(to_hf(tiny_model))
    assert back.config == tiny_model.config
    ids = torch.randint(0, 259, (1, 30))
    torch.testing.assert_close(back(ids), tiny_model(ids))


def test_without_transformers_the_error_says_how_to_install_it(monkeypatch):
    import sys

    from peftlab import hf
    from peftlab.model import ModelConfig, Transformer
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install peftlab\[hf\]"):
        hf.to_hf(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)))
