"""peftlab: fine-tuning and parameter-efficient fine-tuning, measured, on a small model of its own.

>>> import peftlab
>>> model = peftlab.load_base()
>>> peftlab.count_parameters(model).total
3297024
"""

from .checkpoint import available, load_base
from .measure import count_parameters, memory_report
from .model import ModelConfig, Transformer
from .tokenizer import ByteTokenizer
from .evaluate import evaluate_loss, exact_match
from .train import History

__version__ = "0.1.0"
__all__ = ["available", "load_base", "count_parameters", "memory_report", "ModelConfig", "Transformer",
           "ByteTokenizer", "History", "evaluate_loss", "exact_match"]
# The training loop is `peftlab.train.train` (the module keeps its name; see notebooks).
