import copy

import pytest
import torch

from peftlab import prefix, prompt
from peftlab.measure import count_parameters
from peftlab.model import ModelConfig, Transformer
from peftlab.tokenizer import ByteTokenizer
from peftlab.train import lm_loss, train
from peftlab.data import Example

TOK = ByteTokenizer()


def ids_of(text: str) -> torch.Tensor:
    return torch.tensor([TOK.encode(text)])


def test_prefix_from_the_models_own_kv_equals_running_the_text_as_context(tiny_model):
    # the reference: keys and values the model computes for a real text, used as prefixes, must
    # give the same next-token logits as running that text in front of the input
    text, x = "Tevel lives", ids_of(" in Varn")
    with torch.no_grad():
        _, kv = tiny_model(ids_of(text), return_kv=True)
        want = tiny_model(torch.cat([ids_of(text), x], dim=1))[:, len(text):]
        assert torch.allclose(tiny_model(x, prefix_kv=kv), want, atol=1e-5)
        model = prefix.add(tiny_model, n_tokens=len(text), reparametrize=False, init_text=text)
        torch.testing.assert_close(model(x), want)
    got = model.generate(x, 5)
    assert torch.equal(got, tiny_model.generate(torch.cat([ids_of(text), x], dim=1), 5)[:, len(text):])


def test_counts_match_closed_forms_and_fold_keeps_outputs(tiny_model):
    cfg = tiny_model.config
    model = prefix.add(tiny_model, n_tokens=3, hidden=16)
    assert count_parameters(model).trainable == prefix.num_parameters(3, cfg.d_model, cfg.n_layers, hidden=16) \
        == 3 * 32 + (32 * 16 + 16) + (16 * 2 * 2 * 32 + 2 * 2 * 32)
    train(model, [Example("Q: x\nA:", " y\n")] * 4, steps=3, lr=1e-2, batch_size=2, progress=False)
    x = torch.randint(0, 256, (2, 7))
    with torch.no_grad():
        before = model(x)
        prefix.fold(model)
        torch.testing.assert_close(model(x), before)
    assert count_parameters(model).trainable == prefix.num_parameters(3, 32, 2) == 2 * 2 * 3 * 32
    assert not model.settings["reparametrize"]
    with pytest.raises(ValueError, match="no reparametrization"):
        prefix.fold(model)


def test_only_the_prefix_trains(tiny_model):
    before = copy.deepcopy(tiny_model.state_dict())
    model = prefix.add(tiny_model, n_tokens=2, reparametrize=False)
    p0 = model.prefix_encoder.prefix.detach().clone()
    train(model, [Example("Q: x\nA:", " y\n")] * 4, steps=2, lr=1e-2, batch_size=2, progress=False)
    assert not torch.equal(model.prefix_encoder.prefix, p0)
    assert all(torch.equal(v, before[k]) for k, v in tiny_model.state_dict().items())


@pytest.mark.parametrize("reparametrize", [True, False])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_model, reparametrize):
    model = prefix.add(tiny_model, n_tokens=3, reparametrize=reparametrize, hidden=16)
    x = torch.randint(0, 256, (2, 9))

    def grads(checkpointing: bool) -> list[torch.Tensor]:
        model.set_gradient_checkpointing(checkpointing)
        model.zero_grad(set_to_none=True)
        lm_loss(model(x), x).backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    plain, ckpt = grads(False), grads(True)
    assert all(b.checkpoint for b in tiny_model.layers)
    assert len(plain) == len(ckpt) and all(g.abs().sum() > 0 for g in plain)
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(a, b)


def test_disabled_and_save_load(tiny_model, tmp_path):
    model = prefix.add(tiny_model, n_tokens=2, hidden=8)
    x = ids_of("abc")
    with torch.no_grad(), prefix.disabled(model):
        assert torch.equal(model(x), tiny_model(x))
    fresh = copy.deepcopy(tiny_model).requires_grad_(True)
    loaded = prefix.load(fresh, prefix.save(model, tmp_path / "a"))
    assert count_parameters(loaded).trainable == count_parameters(model).trainable
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    folded = prefix.load(copy.deepcopy(tiny_model), prefix.save(prefix.fold(model), tmp_path / "b"))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x))
    deeper = Transformer(ModelConfig(d_model=32, n_layers=3, n_heads=2, d_ff=64, max_seq_len=64))
    with pytest.raises(ValueError, match="n_layers"):
        prefix.load(deeper, tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="prefix"):
        prompt.load(deeper, tmp_path / "a")
    assert all(p.requires_grad for p in deeper.parameters())


def test_bad_input(tiny_model):
    for n, error in [(0, ValueError), (1.5, TypeError), (None, TypeError), (64, ValueError)]:
        with pytest.raises(error, match="n_tokens"):
            prefix.add(tiny_model, n_tokens=n)
    with pytest.raises(ValueError, match="reparametrize=False"):
        prefix.add(tiny_model, 4, init_text="ab")
    with pytest.raises(ValueError, match="init_text is 5 tokens long, more than n_tokens=4"):
        prefix.add(tiny_model, 4, reparametrize=False, init_text="abcde")
    with pytest.raises(ValueError, match="hidden"):
        prefix.add(tiny_model, 4, hidden=0)
    assert all(p.requires_grad for p in tiny_model.parameters())
    model = prefix.add(tiny_model, n_tokens=8, hidden=8)
    with pytest.raises(ValueError, match="input of 60 tokens plus 8 virtual tokens = 68 exceeds .* max_seq_len=64"):
        model(torch.zeros(1, 60, dtype=torch.long))


def test_train_with_gradient_checkpointing_matches_without(tiny_model):
    torch.manual_seed(0)
    model = prefix.add(tiny_model, n_tokens=3, hidden=16)
    twin = copy.deepcopy(model)
    data = [Example("Q: x\nA:", " y\n"), Example("Q: zz\nA:", " w\n")] * 2
    plain = train(model, data, steps=3, lr=1e-2, batch_size=2, progress=False)
    ckpt = train(twin, data, steps=3, lr=1e-2, batch_size=2, progress=False, gradient_checkpointing=True)
    assert plain.loss == pytest.approx(ckpt.loss, abs=1e-5)
    for a, b in zip(model.prefix_encoder.parameters(), twin.prefix_encoder.parameters()):
        torch.testing.assert_close(a, b)
