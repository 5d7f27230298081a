"""Pre-train the base model from scratch on the generated corpus, and report on it.

    python -m peftlab.pretrain            # reproduces peftlab/checkpoints/tiny.*
    python -m peftlab.pretrain --report   # measures the shipped checkpoint, and what fine-tuning does to it
    python -m peftlab.pretrain --name tiny_one --phrasings one   # the base model without knowledge augmentation

Pre-training is next-token prediction on random 256-byte windows of the pre-training corpus
(facts in several phrasings and stories, no question/answer format), AdamW with cosine decay,
in bf16 autocast (about 1.3x faster than fp32 on a 2-core CPU here). The run is seeded; on
another machine or thread count float rounding differs, so the weights differ in the last bits
while the metrics come out the same within a point or two.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from . import data
from .checkpoint import load_base, manifest, save_checkpoint
from .model import ModelConfig, Transformer
from .measure import count_parameters
from .evaluate import evaluate_loss, exact_match
from .train import packed_batches, train

RECIPE = dict(steps=1000, batch_size=32, seq_len=256, lr=2e-3, warmup_steps=50, precision="bf16", seed=0)
# The second base model, without knowledge augmentation: the same recipe on `data.pretraining_corpus(phrasings="one")`
ONE_PHRASING = "tiny_one"


def base_metrics(model: Transformer) -> dict:
    """Validation loss, fact completion and Q/A accuracy before any fine-tuning."""
    corpus, qa = data.pretraining_corpus(), data.qa_task()
    return {
        "parameters": count_parameters(model).total,
        "val_loss": round(evaluate_loss(model, corpus["val"]), 4),
        "fact_completion": round(exact_match(model, data.fact_completion()), 4),
        "qa_before_finetuning": round(exact_match(model, qa["test"]), 4),
    }


def demonstrations(model: Transformer, qa_steps: int = 60, domain_steps: int = 150) -> dict:
    """The two effects the notebooks build on, measured on copies of `model`:

    * Q/A fine-tuning (full, on questions about half of the people) makes the model answer
      questions about the other half, whose facts it only read in pre-training;
    * full fine-tuning on the DNA-like domain, absent from pre-training, erodes fact completion.
    """
    import copy

    qa, facts = data.qa_task(), data.fact_completion()
    tuned = copy.deepcopy(model)
    t = time.perf_counter()
    train(tuned, qa["train"], steps=qa_steps, lr=1e-4, batch_size=16, progress=False)
    qa_s = time.perf_counter() - t
    dna = copy.deepcopy(model)
    t = time.perf_counter()
    train(dna, data.dna_task()["train"], steps=domain_steps, lr=1e-3, batch_size=16, progress=False)
    dna_s = time.perf_counter() - t
    return {"qa_finetune_steps": qa_steps, "qa_finetune_s": round(qa_s, 1),
            "qa_heldout_after": round(exact_match(tuned, qa["test"]), 4),
            "domain_finetune_steps": domain_steps, "domain_finetune_s": round(dna_s, 1),
            "domain_val_loss_after": round(evaluate_loss(dna, data.dna_task()["val"]), 4),
            "fact_completion_after_domain": round(exact_match(dna, facts), 4)}


def pretrain(name: str = "tiny", log_every: int = 100, phrasings: str = "all", **overrides) -> Transformer:
    """Train the base model from scratch with RECIPE (or `overrides`) on the corpus with every phrasing of
    each fact (`phrasings="all"`) or one (`"one"`, the `tiny_one` model), and save it as `name`."""
    if phrasings not in data.PHRASING_CHOICES:  # before anything is trained or written
        raise ValueError(f"phrasings must be one of {data.PHRASING_CHOICES}, got {phrasings!r}")
    recipe = {**RECIPE, **overrides}
    torch.manual_seed(recipe["seed"])
    model = Transformer(ModelConfig(max_seq_len=recipe["seq_len"]))
    batches = packed_batches(data.pretraining_corpus(phrasings=phrasings)["train"], recipe["batch_size"],
                             recipe["seq_len"], seed=recipe["seed"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], betas=(0.9, 0.95), weight_decay=0.0)
    start = time.perf_counter()

    def log(step: int, loss: float) -> None:
        if step % log_every == 0:
            acc = exact_match(model, data.fact_completion())
            print(f"step {step:5d}  loss {loss:.4f}  fact completion {acc:.1%}  "
                  f"{time.perf_counter() - start:6.0f} s", flush=True)

    train(model, batches, steps=recipe["steps"], optimizer=optimizer, lr=recipe["lr"], schedule="cosine",
          warmup_steps=recipe["warmup_steps"], precision=recipe["precision"], seed=recipe["seed"],
          progress=False, on_step=log)
    wall = time.perf_counter() - start
    if phrasings != "all":
        recipe["phrasings"] = phrasings
    info = {"command": f"python -m peftlab.pretrain --name {name}" + (f" --phrasings {phrasings}" if phrasings != "all" else ""),
            "pretrain": {**recipe, "wall_time_s": round(wall, 1), "threads": torch.get_num_threads(),
                         "torch": torch.__version__, "machine": platform.machine()}}
    save_checkpoint(model, name, info)
    model = load_base(name)  # measure what ships: the fp16-stored weights
    metrics = base_metrics(model)
    save_checkpoint(model, name, {**info, "metrics": metrics})
    print(metrics)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", action="store_true", help="measure the shipped checkpoint instead of training")
    parser.add_argument("--name", default="tiny")
    parser.add_argument("--steps", type=int, default=RECIPE["steps"])
    parser.add_argument("--phrasings", choices=data.PHRASING_CHOICES, default="all",
                        help=f"'one': the base model without knowledge augmentation (shipped as {ONE_PHRASING})")
    args = parser.parse_args()
    if args.report:
        t = time.perf_counter()
        model = load_base(args.name)
        load_s = time.perf_counter() - t
        print(f"load_base('{args.name}'): {load_s:.3f} s")
        for k, v in {**base_metrics(model), **demonstrations(model)}.items():
            print(f"{k}: {v}")
        print("pre-training:", manifest(args.name).get("pretrain"))
    else:
        pretrain(args.name, steps=args.steps, phrasings=args.phrasings)


if __name__ == "__main__":
    main()
