import shutil
import time

import pytest

import peftlab
from peftlab import data
import peftlab.checkpoint
import peftlab.pretrain
from peftlab.checkpoint import CHECKPOINT_DIR, load_base, manifest
from peftlab.model import ModelConfig


def test_shipped_checkpoint_is_small_and_hashed():
    weights = CHECKPOINT_DIR / "tiny.safetensors"
    assert weights.stat().st_size <= 10 * 2**20
    assert len(manifest("tiny")["sha256"]) == 64


def test_load_base_is_fast():
    load_base()  # warm the file cache
    t = time.perf_counter()
    load_base()
    assert time.perf_counter() - t < 1.0


def test_base_completes_pretraining_facts(base):
    assert peftlab.exact_match(base, data.fact_completion()) >= 0.90


def test_base_does_not_know_the_qa_format(base):
    assert peftlab.exact_match(base, data.qa_task()["test"]) <= 0.20


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"available in .*: \['teacher', 'tiny', 'tiny_one'\]"):
        load_base("huge")


def test_corrupted_checkpoint_is_refused(tmp_path):
    for suffix in (".json", ".safetensors"):
        shutil.copy(CHECKPOINT_DIR / f"tiny{suffix}", tmp_path / f"tiny{suffix}")
    raw = bytearray((tmp_path / "tiny.safetensors").read_bytes())
    raw[-100] ^= 0xFF
    (tmp_path / "tiny.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupted"):
        load_base("tiny", directory=tmp_path)


def test_checkpoint_mismatching_its_config_is_refused(tmp_path):
    import json

    from peftlab.checkpoint import sha256_file
    shutil.copy(CHECKPOINT_DIR / "tiny.safetensors", tmp_path / "tiny.safetensors")
    from peftlab.checkpoint import config_sha256
    m = manifest("tiny")
    m["config"]["d_ff"] = 512
    m["config_sha256"] = config_sha256(m["config"])  # a consistent manifest, for other weights
    m["sha256"] = sha256_file(tmp_path / "tiny.safetensors")
    (tmp_path / "tiny.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="does not match its config"):
        load_base("tiny", directory=tmp_path)


def _edited_manifest(tmp_path, edit):
    import json
    shutil.copy(CHECKPOINT_DIR / "tiny.safetensors", tmp_path / "tiny.safetensors")
    m = manifest("tiny")
    edit(m)
    (tmp_path / "tiny.json").write_text(m if isinstance(m, str) else json.dumps(m))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["config"].update(rope_theta=500000.0), "config in tiny.json was edited"),  # same shapes, other answers
    (lambda m: m["config"].update(max_seq_len=128), "config in tiny.json was edited"),
    (lambda m: m.pop("config_sha256"), "edited or has no hash"),
    (lambda m: m.pop("sha256"), "needs 'config' .* and 'sha256'"),
])
def test_an_edited_or_malformed_manifest_is_refused(tmp_path, edit, message):
    _edited_manifest(tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        load_base("tiny", directory=tmp_path)


def test_a_manifest_that_is_not_json_or_an_invalid_config_is_named(tmp_path):
    import json

    from peftlab.checkpoint import config_sha256
    shutil.copy(CHECKPOINT_DIR / "tiny.safetensors", tmp_path / "tiny.safetensors")
    (tmp_path / "tiny.json").write_text("{ not json")
    with pytest.raises(ValueError, match="tiny.json is not valid JSON"):
        load_base("tiny", directory=tmp_path)
    m = manifest("tiny")
    m["config"]["n_heads"] = 7  # 256 does not split into 7 heads
    m["config_sha256"] = config_sha256(m["config"])
    (tmp_path / "tiny.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="no valid model config: d_model must split into n_heads"):
        load_base("tiny", directory=tmp_path)


def test_a_missing_directory_and_stray_json_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_base("tiny", directory=tmp_path / "nonexistent")
    (tmp_path / "notes.json").write_text("{}")  # a JSON file without weights is not a base model
    assert peftlab.checkpoint.available(tmp_path) == []


@pytest.mark.parametrize("changes, param", [({"n_heads": 7}, "n_heads"), ({"d_model": 0}, "d_model"),
                                             ({"rope_theta": -1.0}, "rope_theta"), ({"n_layers": 2.5}, "n_layers")])
def test_model_config_is_validated(changes, param):
    with pytest.raises((ValueError, TypeError), match=param):
        ModelConfig(**changes)


def test_qa_fine_tuning_on_half_the_people_answers_the_other_half(base):
    """Knowledge from pre-training, format from fine-tuning: the demonstration notebook 10 builds on."""
    from peftlab.train import train
    qa = data.qa_task()
    train(base, qa["train"], steps=60, lr=1e-4, batch_size=16, progress=False)
    assert peftlab.exact_match(base, qa["test"]) >= 0.70
    assert peftlab.exact_match(base, data.stranger_qa()) <= 0.20  # people it never read about


def test_the_one_phrasing_base_ships_and_pretraining_refuses_an_unknown_corpus(tmp_path, monkeypatch):
    """tiny_one: the base model without knowledge augmentation (notebook 10), made by the same recipe on the
    one-phrasing corpus; it stores the facts as well as tiny in their one trained form."""
    info = manifest("tiny_one")
    assert info["pretrain"]["phrasings"] == "one" and info["command"].endswith("--phrasings one")
    assert {k: v for k, v in info["pretrain"].items() if k in peftlab.pretrain.RECIPE} == peftlab.pretrain.RECIPE
    assert info["metrics"]["fact_completion"] >= 0.90
    monkeypatch.setattr(peftlab.checkpoint, "CHECKPOINT_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"phrasings must be one of \('all', 'one'\), got 'two'"):
        peftlab.pretrain.pretrain("x", phrasings="two")
    assert list(tmp_path.iterdir()) == []
