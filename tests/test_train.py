import pytest
import torch

from peftlab import data
from peftlab.data import Example
from peftlab.tokenizer import ByteTokenizer
from peftlab.evaluate import evaluate_loss, exact_match
from peftlab.train import IGNORE, collate, example_batches, train

TASK = [Example(f"{w}:", f" {w[::-1]}\n") for w in ["abc", "hello", "stone", "river", "cat", "lamp", "tree"]]


def test_loss_falls_on_a_small_task(tiny_model):
    before = evaluate_loss(tiny_model, TASK, loss_on="response")
    hist = train(tiny_model, TASK, steps=40, lr=3e-3, batch_size=4, progress=False)
    assert hist.steps == 40 and hist.tokens > 0 and hist.tokens_per_s > 0
    assert evaluate_loss(tiny_model, TASK, loss_on="response") < 0.6 * before


def test_response_only_labels():
    ids, labels = collate([Example("ab", "cd"), Example("x", "y")], ByteTokenizer(), loss_on="response")
    assert ids.shape == (2, 5)  # "ab" + "cd" + EOS
    assert labels[0].tolist() == [IGNORE, IGNORE, ord("c"), ord("d"), 258]
    assert labels[1].tolist() == [IGNORE, ord("y"), 258, IGNORE, IGNORE]  # padding carries no loss
    _, all_labels = collate([Example("ab", "cd")], ByteTokenizer(), loss_on="all")
    assert all_labels[0].tolist() == [ord("a"), ord("b"), ord("c"), ord("d"), 258]


def test_gradient_accumulation_matches_one_big_batch(tiny_model):
    batch = collate(["abcd: dcba", "lamp: pmal", "tree: eert", "road: daor"], ByteTokenizer())
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}

    def one_step(batches, **kw):
        tiny_model.load_state_dict(state)
        sgd = torch.optim.SGD(tiny_model.parameters(), lr=1.0)  # the update is the gradient itself
        train(tiny_model, iter(batches), steps=1, optimizer=sgd, max_grad_norm=None, progress=False, **kw)
        return {k: v.clone() for k, v in tiny_model.state_dict().items()}

    big = one_step([batch], batch_size=4)
    accumulated = one_step([(batch[0][:2], batch[1][:2]), (batch[0][2:], batch[1][2:])], batch_size=2, grad_accum=2)
    for k in big:
        torch.testing.assert_close(accumulated[k], big[k], atol=1e-6, rtol=1e-5)


def test_only_trainable_parameters_change(tiny_model):
    for p in tiny_model.parameters():
        p.requires_grad_(False)
    tiny_model.lm_head.weight.requires_grad_(True)
    frozen = tiny_model.embed_tokens.weight.clone()
    head = tiny_model.lm_head.weight.clone()
    train(tiny_model, TASK, steps=3, batch_size=len(TASK), progress=False)
    assert torch.equal(frozen, tiny_model.embed_tokens.weight)
    assert not torch.equal(head, tiny_model.lm_head.weight)


def test_bf16_autocast_trains(tiny_model):
    hist = train(tiny_model, TASK, steps=3, batch_size=len(TASK), precision="bf16", progress=False)
    assert len(hist.loss) == 3 and all(torch.isfinite(torch.tensor(hist.loss)))


def test_fp16_on_cpu_suggests_bf16(tiny_model):
    if torch.cuda.is_available():
        pytest.skip("fp16 is supported on CUDA")
    with pytest.raises(ValueError, match="use precision='bf16'"):
        train(tiny_model, TASK, steps=1, precision="fp16", progress=False)


def test_bad_arguments(tiny_model):
    with pytest.raises(ValueError, match="loss_on"):
        train(tiny_model, TASK, steps=1, loss_on="prompt")
    with pytest.raises(ValueError, match="steps"):
        train(tiny_model, TASK, steps=0)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(tiny_model.requires_grad_(False), TASK, steps=1)


def test_exact_match_requires_the_whole_response(tiny_model):
    ex = [Example("abc", "zzz")]
    acc, preds = exact_match(tiny_model, ex, return_predictions=True)
    assert acc == float(preds[0].startswith("zzz")) and len(preds[0]) <= 4


def test_train_refuses_a_string_and_an_exhausted_iterator_and_a_bad_seed(tiny_model):
    with pytest.raises(ValueError, match="got one string; wrap it in a list"):
        train(tiny_model, "ACGT" * 10, steps=1, progress=False)
    with pytest.raises(ValueError, match="seed must be"):
        train(tiny_model, ["abc", "def"], steps=1, seed=-1, progress=False)
    one_batch = iter([(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))])
    tiny_model.eval()
    with pytest.raises(ValueError, match="data ran out after 1 of 3 steps"):
        train(tiny_model, one_batch, steps=3, progress=False)
    assert not tiny_model.training  # a failure halfway leaves the model's mode as it was


def test_a_batch_larger_than_the_data_is_refused_before_training(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    tiny_model.eval()
    with pytest.raises(ValueError, match=r"batch_size=16 is larger than the 7 examples in data; pass batch_size <= 7"):
        train(tiny_model, TASK[:7], steps=2, progress=False)  # it used to shrink every batch to 7, silently
    with pytest.raises(ValueError, match="batch_size=3 is larger than the 2 examples"):
        next(example_batches(TASK[:2], batch_size=3))
    assert not tiny_model.training
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in before.items())


def test_a_failure_inside_training_restores_mode_and_checkpointing(tiny_model):
    tiny_model.eval()

    def boom(step, loss):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train(tiny_model, ["abcdef", "ghijkl"], steps=2, batch_size=2, gradient_checkpointing=True, on_step=boom,
              progress=False)
    assert not tiny_model.training
    assert not any(block.checkpoint for block in tiny_model.layers)  # switched on for the run, off again


def test_a_non_finite_loss_stops_training_before_nan_reaches_the_weights(tiny_model):
    from peftlab.train import NonFiniteLoss
    with torch.no_grad():
        tiny_model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")  # a NaN weight makes every loss NaN
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    with pytest.raises(NonFiniteLoss, match="the loss became nan at step 1"):
        train(tiny_model, data.qa_task()["train"][:8], steps=3, lr=1e-3, batch_size=4, progress=False)
    for n, p in tiny_model.named_parameters():  # no update was made
        torch.testing.assert_close(p, before[n], rtol=0, atol=0, equal_nan=True)

