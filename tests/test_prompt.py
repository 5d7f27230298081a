import copy

import pytest
import torch

from peftlab import prompt, ptuning
from peftlab.measure import count_parameters, memory_report
from peftlab.model import ModelConfig, Transformer
from peftlab.tokenizer import ByteTokenizer
from peftlab.evaluate import exact_match
from peftlab.train import train
from peftlab.data import Example
from peftlab.explore.virtual_tokens import VirtualTokenExplorer

TOK = ByteTokenizer()


def ids_of(text: str) -> torch.Tensor:
    return torch.tensor([TOK.encode(text)])


def test_text_init_equals_running_the_text_as_context(tiny_model):
    # init="text" with a text of exactly n tokens makes P the text's embeddings: the wrapped model
    # must give the logits the base gives for the real tokens after that text
    text = "Q: A:"
    model = prompt.add(tiny_model, n_tokens=len(text), init="text", init_text=text)
    x = ids_of(" Varn is")
    with torch.no_grad():
        want = tiny_model(torch.cat([ids_of(text), x], dim=1))[:, len(text):]
        got = model(x)
    assert got.shape == (1, x.shape[1], 259)
    torch.testing.assert_close(got, want)


def test_text_shorter_than_prompt_is_repeated(tiny_model):
    model = prompt.add(tiny_model, n_tokens=5, init="text", init_text="ab")
    want = tiny_model.embed_tokens.weight[torch.tensor(TOK.encode("ababa"))]
    torch.testing.assert_close(model.soft_prompt.weight, want)


def test_right_padding_does_not_change_real_positions(tiny_model):
    model = prompt.add(tiny_model, n_tokens=3, init="vocab")
    short, long = TOK.encode("abc"), TOK.encode("abcdefg")
    batch = torch.tensor([short + [TOK.pad_id] * 4, long])
    with torch.no_grad():
        torch.testing.assert_close(model(batch)[0, :3], model(torch.tensor([short]))[0])


def test_generate_with_kv_cache_equals_generating_after_the_text(tiny_model):
    text = "Tevel"
    model = prompt.add(tiny_model, n_tokens=len(text), init="text", init_text=text)
    x = ids_of(" lives in")
    got = model.generate(x, 6)
    want = tiny_model.generate(torch.cat([ids_of(text), x], dim=1), 6)[:, len(text):]
    assert torch.equal(got, want)


def test_only_the_prompt_trains_and_counts_match_formula(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    model = prompt.add(tiny_model, n_tokens=4)
    n = count_parameters(model)
    assert n.trainable == prompt.num_parameters(4, 32) == 4 * 32
    assert n.total == count_parameters(tiny_model).total + 4 * 32
    p0 = model.soft_prompt.weight.detach().clone()
    data = [Example("Q: x\nA:", " y\n")] * 4
    train(model, data, steps=3, lr=1e-2, batch_size=2, progress=False)
    assert not torch.equal(model.soft_prompt.weight, p0)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    r = memory_report(model, torch.zeros(2, 8, dtype=torch.long))
    assert r.gradients == 4 * 32 * 4 and r.optimizer == 2 * 4 * 32 * 4
    assert 0.0 <= exact_match(model, data) <= 1.0


def test_disabled_runs_the_base_model(tiny_model):
    x = ids_of("hello")
    with torch.no_grad():
        base = tiny_model(x)
        model = prompt.add(tiny_model, n_tokens=4)
        with prompt.disabled(model):
            assert torch.equal(model(x), base)
            assert torch.equal(model.generate(x, 3), tiny_model.generate(x, 3))
        assert not torch.equal(model(x), base)


def test_save_load_roundtrip_and_mismatches(tiny_model, tmp_path):
    model = prompt.add(tiny_model, n_tokens=4, init="vocab")
    path = prompt.save(model, tmp_path / "p")
    fresh = Transformer(tiny_model.config)
    fresh.load_state_dict(tiny_model.state_dict())
    loaded = prompt.load(fresh, path)
    x = ids_of("abc")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    other = Transformer(ModelConfig(d_model=64, n_layers=2, n_heads=2, d_ff=64, max_seq_len=64))
    with pytest.raises(ValueError, match="d_model"):
        prompt.load(other, path)
    assert all(p.requires_grad for p in other.parameters())  # nothing changed
    with pytest.raises(FileNotFoundError, match="ptuning"):
        ptuning.load(fresh, path)
    # a weights file that does not fit its settings
    cfg = (path / "prompt_config.json").read_text().replace('"n_tokens": 4', '"n_tokens": 5')
    (path / "prompt_config.json").write_text(cfg)
    with pytest.raises(ValueError, match="is not the file saved with the rest of this adapter"):
        prompt.load(Transformer(tiny_model.config), path)  # the manifest written with the pair catches it
    (path / "peftlab_manifest.json").unlink()  # a folder without one: the shapes still do
    with pytest.raises(ValueError, match="does not match"):
        prompt.load(Transformer(tiny_model.config), path)


@pytest.mark.parametrize("n, error", [(0, ValueError), (-2, ValueError), (2.5, TypeError), (True, TypeError),
                                      ("4", TypeError), (64, ValueError)])
def test_bad_prompt_length(tiny_model, n, error):
    with pytest.raises(error, match="n_tokens"):
        prompt.add(tiny_model, n_tokens=n)
    assert all(p.requires_grad for p in tiny_model.parameters())


def test_bad_init(tiny_model):
    with pytest.raises(ValueError, match="'random', 'vocab', 'text'"):
        prompt.add(tiny_model, 4, init="zeros")
    with pytest.raises(ValueError, match="init_text is 6 tokens long, more than the prompt's n_tokens=4"):
        prompt.add(tiny_model, 4, init="text", init_text="abcdef")
    with pytest.raises(ValueError, match="needs init_text"):
        prompt.add(tiny_model, 4, init="text")
    assert all(p.requires_grad for p in tiny_model.parameters())


def test_input_longer_than_context_names_both_numbers(tiny_model):
    model = prompt.add(tiny_model, n_tokens=10)
    with pytest.raises(ValueError, match="input of 60 tokens plus 10 virtual tokens = 70 .* max_seq_len=64"):
        model(torch.zeros(1, 60, dtype=torch.long))
    with pytest.raises(ValueError, match="plus 20 new tokens plus 10 virtual tokens = 80"):
        model.generate(torch.zeros(1, 50, dtype=torch.long), 20)


def test_explorer_run_returns_numbers_for_each_method(tiny_model):
    ex = VirtualTokenExplorer(tiny_model, batch_size=2, n_eval=4)
    r = ex.run("prompt", n_tokens=3, option="text", steps=2)
    assert len(r["loss"]) == 2 and r["trainable"] == 3 * 32
    assert r["heldout_loss"] > 0 and 0.0 <= r["accuracy"] <= 1.0
    assert ex.run("prefix", 2, "direct", steps=1)["trainable"] == 2 * 2 * 2 * 32
    assert ex.run("ptuning", 2, "mlp", steps=1)["trainable"] == ptuning.num_parameters(2, 32, 32, "mlp")
    assert all(p.requires_grad for p in tiny_model.parameters())  # runs on copies
    with pytest.raises(ValueError, match="method and option"):
        ex.run("prompt", 3, "lstm")


def test_generate_through_a_wrapper_leaves_every_module_in_its_mode():
    import copy
    from peftlab import ModelConfig, Transformer, prompt
    base = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)).eval()
    wrapped = prompt.add(copy.deepcopy(base), n_tokens=2)
    before = [(n, m.training) for n, m in wrapped.named_modules()]
    wrapped.generate(torch.zeros(1, 3, dtype=torch.long), 2)
    assert [(n, m.training) for n, m in wrapped.named_modules()] == before


def test_virtual_tokens_on_a_model_with_trainable_lora_layers_are_refused(tiny_model):
    from peftlab import lora
    lora.add(tiny_model, r=2)
    with pytest.raises(ValueError, match="already holds trainable LoRALinear layers"):
        prompt.add(tiny_model, n_tokens=4)
    assert all(p.requires_grad for n, p in tiny_model.named_parameters() if "lora_" in n)  # untouched


def test_load_with_settings_its_method_does_not_take_is_a_value_error(tiny_model, tmp_path):
    import json
    path = prompt.save(prompt.add(copy.deepcopy(tiny_model), n_tokens=4), tmp_path / "p")
    cfg = json.loads((path / "prompt_config.json").read_text())
    cfg["settings"]["n_virtual"] = 4  # not an argument of prompt.add
    (path / "prompt_config.json").write_text(json.dumps(cfg))
    (path / "peftlab_manifest.json").unlink()
    with pytest.raises(ValueError, match=r"settings \[.*'n_virtual'.*\] are not those of prompt.add"):
        prompt.load(Transformer(tiny_model.config), path)


def test_a_soft_prompt_moves_between_peftlab_and_peft(tmp_path):
    """PEFT's format both ways: PEFT's logits hold the n virtual positions first; the real ones agree."""
    peft = pytest.importorskip("peft")
    hf = pytest.importorskip("peftlab.hf")
    torch.manual_seed(0)
    base = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=64))
    ours = prompt.add(copy.deepcopy(base), n_tokens=5, init="vocab")
    prompt.save(ours, tmp_path / "to_peft", format="peft")
    theirs = peft.PeftModel.from_pretrained(hf.to_hf(copy.deepcopy(base)), tmp_path / "to_peft").eval()
    x = ids_of("hello")
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=x).logits[:, 5:], ours(x), rtol=0, atol=1e-4)
        theirs.prompt_encoder["default"].embedding.weight.normal_()  # a prompt PEFT trained
    theirs.save_pretrained(tmp_path / "from_peft")
    back = prompt.load(copy.deepcopy(base), tmp_path / "from_peft")
    with torch.no_grad():
        torch.testing.assert_close(back(x), theirs(input_ids=x).logits[:, 5:], rtol=0, atol=1e-4)
    with pytest.raises(TypeError, match="prompt-tuning model"):
        prompt.save(base, tmp_path / "x", format="peft")
