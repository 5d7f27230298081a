"""The notebooks' one switch to a larger GPU setting (`peftlab.scale`, read from PEFTLAB_SCALE)."""

import re
from pathlib import Path

import pytest
import torch

from peftlab import scale

ROOT = Path(__file__).resolve().parent.parent


def test_unset_or_cpu_is_the_cpu_setting(monkeypatch):
    monkeypatch.delenv(scale.VARIABLE, raising=False)
    assert (scale.setting(), scale.gpu(), scale.device()) == ("cpu", False, "cpu")
    monkeypatch.setenv(scale.VARIABLE, "CPU")
    assert scale.device() == "cpu"


def test_unknown_value_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv(scale.VARIABLE, "tpu")
    with pytest.raises(ValueError, match=r"PEFTLAB_SCALE must be one of \('cpu', 'gpu'\).*'tpu'"):
        scale.setting()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_without_cuda_is_refused(monkeypatch):
    monkeypatch.setenv(scale.VARIABLE, "gpu")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        scale.gpu()


def test_no_notebook_switches_on_cuda_by_itself():
    """A compared output may change only through PEFTLAB_SCALE, never because a GPU happens to be there."""
    for src in sorted((ROOT / "notebooks" / "src").glob("*.py")):
        assert "cuda.is_available()" not in src.read_text(), f"{src.name} switches on torch.cuda.is_available()"


def test_the_variable_is_read_in_one_place():
    readers = [p.relative_to(ROOT).as_posix() for p in (ROOT / "peftlab").rglob("*.py")
               if re.search(r"PEFTLAB_SCALE|VARIABLE\b", p.read_text()) and p.name != "scale.py"]
    assert readers == [], f"PEFTLAB_SCALE read outside peftlab/scale.py: {readers}"


def test_the_test_command_pins_the_cpu_setting():
    assert "export PEFTLAB_SCALE=cpu" in (ROOT / "scripts" / "test.sh").read_text()
