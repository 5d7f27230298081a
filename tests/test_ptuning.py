import copy

import pytest
import torch

from peftlab import prompt, ptuning
from peftlab.data import Example
from peftlab.measure import count_parameters
from peftlab.train import train


@pytest.mark.parametrize("encoder", ["lstm", "mlp"])
def test_count_matches_formula_and_only_the_encoder_trains(tiny_model, encoder):
    before = copy.deepcopy(tiny_model.state_dict())
    model = ptuning.add(tiny_model, n_tokens=3, encoder=encoder, hidden=8)
    n = count_parameters(model)
    assert n.trainable == ptuning.num_parameters(3, 32, 8, encoder)
    assert n.trainable == sum(p.numel() for p in model.soft_prompt.parameters())
    assert model.soft_prompt().shape == (3, 32)
    h0 = model.soft_prompt.embedding.detach().clone()
    train(model, [Example("Q: x\nA:", " y\n")] * 4, steps=2, lr=1e-2, batch_size=2, progress=False)
    assert not torch.equal(model.soft_prompt.embedding, h0)
    assert all(torch.equal(v, before[k]) for k, v in tiny_model.state_dict().items())


def test_closed_forms_by_hand():
    n, d, k = 20, 256, 128
    assert ptuning.num_parameters(n, d, k, "mlp") == n * d + d * k + k + k * k + k + k * d + d
    # torch's own LSTM count, 2 layers, bidirectional
    lstm = torch.nn.LSTM(d, k, num_layers=2, bidirectional=True)
    head = 2 * k * 2 * k + 2 * k + 2 * k * d + d
    assert ptuning.num_parameters(n, d, k, "lstm") == n * d + sum(p.numel() for p in lstm.parameters()) + head


def test_fold_caches_the_encoder_output(tiny_model, tmp_path):
    model = ptuning.add(tiny_model, n_tokens=4, encoder="lstm", hidden=8)
    train(model, [Example("Q: x\nA:", " y\n")] * 4, steps=2, lr=1e-2, batch_size=2, progress=False)
    x = torch.randint(0, 256, (2, 6))
    with torch.no_grad():
        before = model(x)
        gen = model.generate(x, 4)
        ptuning.fold(model)
        torch.testing.assert_close(model(x), before)
    assert torch.equal(model.generate(x, 4), gen)
    assert not hasattr(model.soft_prompt, "lstm")
    assert count_parameters(model).trainable == prompt.num_parameters(4, 32)
    loaded = prompt.load(copy.deepcopy(tiny_model), prompt.save(model, tmp_path))  # now a plain soft prompt
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), before)
    with pytest.raises(TypeError, match="ptuning.add"):
        ptuning.fold(model)


def test_save_load_and_disabled(tiny_model, tmp_path):
    model = ptuning.add(tiny_model, n_tokens=3, encoder="mlp", hidden=8)
    x = torch.randint(0, 256, (1, 5))
    loaded = ptuning.load(copy.deepcopy(tiny_model), ptuning.save(model, tmp_path))
    assert loaded.settings == {"n_tokens": 3, "encoder": "mlp", "hidden": 8}
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
        with ptuning.disabled(loaded):
            assert torch.equal(loaded(x), tiny_model(x))
    with pytest.raises(FileNotFoundError, match="ptuning_config.json"):
        prompt.load(copy.deepcopy(tiny_model), tmp_path)


def test_bad_input(tiny_model):
    with pytest.raises(ValueError, match=r"encoder must be one of \('lstm', 'mlp'\), got 'gru'"):
        ptuning.add(tiny_model, 4, encoder="gru")
    with pytest.raises(ValueError, match="n_tokens"):
        ptuning.add(tiny_model, 0)
    with pytest.raises(TypeError, match="hidden"):
        ptuning.add(tiny_model, 4, hidden=2.0)
    assert all(p.requires_grad for p in tiny_model.parameters())
