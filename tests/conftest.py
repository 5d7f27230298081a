import pytest
import torch

from peftlab.model import ModelConfig, Transformer


@pytest.fixture
def tiny_model() -> Transformer:
    """A small randomly initialised model, for tests that do not need the pretrained one."""
    torch.manual_seed(0)
    return Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=64))


@pytest.fixture(scope="session")
def base_state():
    from peftlab import load_base
    return load_base().state_dict()


@pytest.fixture
def base(base_state):
    """A fresh copy of the pretrained base model."""
    from peftlab import load_base
    model = Transformer(load_base().config)
    model.load_state_dict(base_state)
    return model.eval()
