import pytest
import torch

from peftlab.model import ModelConfig, Transformer


def test_logits_shape(tiny_model):
    ids = torch.randint(0, 259, (3, 17))
    assert tiny_model(ids).shape == (3, 17, 259)


def test_llama_module_names(tiny_model):
    names = {n.split(".")[-1] for n, _ in tiny_model.named_modules()}
    assert {"embed_tokens", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
            "norm", "lm_head"} <= names


def test_causal_later_tokens_never_change_earlier_logits(tiny_model):
    ids = torch.randint(0, 259, (2, 20))
    changed = ids.clone()
    changed[:, 12:] = torch.randint(0, 259, (2, 8))
    a, b = tiny_model(ids), tiny_model(changed)
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert (a[:, 12:] - b[:, 12:]).abs().max() > 1e-3


def test_inputs_embeds_equal_ids(tiny_model):
    ids = torch.randint(0, 259, (2, 9))
    torch.testing.assert_close(tiny_model(inputs_embeds=tiny_model.embed_tokens(ids)), tiny_model(ids))


def test_prefix_kv_equals_running_the_context(tiny_model):
    ids = torch.randint(0, 259, (2, 16))
    full = tiny_model(ids)
    _, kv = tiny_model(ids[:, :10], return_kv=True)
    torch.testing.assert_close(tiny_model(ids[:, 10:], prefix_kv=kv), full[:, 10:], atol=1e-5, rtol=1e-5)


def test_greedy_generate_matches_step_by_step_argmax(tiny_model):
    ids = torch.randint(0, 256, (2, 5))
    out = tiny_model.generate(ids, 6)
    seq = ids
    for _ in range(6):  # no KV cache: recompute the whole sequence each step
        seq = torch.cat([seq, tiny_model(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq)


def test_sampled_generate_is_reproducible_with_a_generator(tiny_model):
    ids = torch.randint(0, 256, (1, 4))
    a = tiny_model.generate(ids, 8, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(1))
    b = tiny_model.generate(ids, 8, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (1, 12)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model):
    ids = torch.randint(0, 259, (2, 12))
    grads = []
    for ckpt in (False, True):
        tiny_model.zero_grad()
        tiny_model.set_gradient_checkpointing(ckpt)
        tiny_model(ids).sum().backward()
        grads.append([p.grad.clone() for p in tiny_model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_gradient_checkpointing_with_frozen_embedding(tiny_model):
    tiny_model.embed_tokens.weight.requires_grad_(False)
    tiny_model.set_gradient_checkpointing(True)
    tiny_model(torch.randint(0, 259, (1, 8))).sum().backward()  # no "does not require grad" error
    assert tiny_model.layers[0].self_attn.q_proj.weight.grad is not None


@pytest.mark.parametrize("bad", [torch.zeros(1, 4), torch.zeros(4, dtype=torch.long)])
def test_wrong_dtype_or_shape_is_a_value_error(tiny_model, bad):
    with pytest.raises(ValueError, match="int64 token ids"):
        tiny_model(bad)


def test_too_long_input_names_the_limit(tiny_model):
    with pytest.raises(ValueError, match="max_seq_len=64"):
        tiny_model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="max_seq_len=64"):
        tiny_model.generate(torch.zeros(1, 60, dtype=torch.long), 5)


def test_runs_on_cuda_when_available():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)).cuda()
    assert m(torch.zeros(1, 4, dtype=torch.long, device="cuda")).is_cuda


@pytest.mark.parametrize("bad", [{"temperature": -1.0}, {"temperature": float("nan")}, {"temperature": "hot"},
                                 {"top_k": 0}, {"top_k": 10_000}, {"top_k": 2.5}])
def test_generate_refuses_bad_sampling_settings_naming_them(bad):
    from peftlab.model import generate
    m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"{name} must be"):
        generate(m, torch.zeros(1, 3, dtype=torch.long), 2, **({"temperature": 1.0} if name == "top_k" else {}), **bad)
    assert m.training  # refused before the model was switched to eval mode


@pytest.mark.parametrize("ids, what", [(torch.zeros(3, dtype=torch.long), "ids must be a"),
                                       (torch.zeros(1, 0, dtype=torch.long), "ids must be a"),
                                       (torch.zeros(1, 3), "ids must be a"),
                                       (torch.full((1, 3), 300), r"ids must lie in \[0, 259\)"),
                                       (torch.full((1, 3), -1), r"ids must lie in \[0, 259\)")])
def test_generate_refuses_bad_ids_naming_them(ids, what):
    from peftlab.model import generate
    m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    with pytest.raises(ValueError, match=what):
        generate(m, ids, 2)


def test_a_failing_generate_leaves_the_models_mode_as_it_was():
    from peftlab.model import generate
    m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)).train()

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    m.forward = broken
    with pytest.raises(RuntimeError, match="boom"):
        generate(m, torch.zeros(1, 3, dtype=torch.long), 2)
    assert m.training
