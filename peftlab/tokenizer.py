"""A byte-level tokenizer: every UTF-8 byte is one token, plus three special tokens.

Byte-level means no vocabulary to train and no unknown token: any string round-trips
exactly (`decode(encode(s)) == s`). The price is longer sequences than a subword
tokenizer, which is fine at our model's size and keeps the embedding table small
(259 rows).
"""

from __future__ import annotations

import torch

PAD, BOS, EOS = 256, 257, 258
VOCAB_SIZE = 259


class ByteTokenizer:
    """Token ids 0..255 are bytes; 256 = PAD, 257 = BOS, 258 = EOS.

    >>> tok = ByteTokenizer()
    >>> tok.decode(tok.encode("Ilsa lives in Varn."))
    'Ilsa lives in Varn.'
    """

    pad_id, bos_id, eos_id = PAD, BOS, EOS
    vocab_size = VOCAB_SIZE
    name = "byte-v1"

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = list(text.encode("utf-8"))
        return ([BOS] if bos else []) + ids + ([EOS] if eos else [])

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Bytes back to text; special tokens are dropped."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByteTokenizer) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)
