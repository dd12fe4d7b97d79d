"""Llama-2's sentencepiece tokenizer, rebuilt from the npm package ``llama-tokenizer-js`` (MIT).

The package ships Llama-1/2's vocabulary (32,000 pieces, in id order) and its BPE merge list, as two
base64 strings inside ``llama-tokenizer.js``. A sentencepiece BPE model built from them: pieces in
vocabulary order; a piece made by a merge scores minus that merge's rank (sentencepiece merges the
highest score first); ``<0x..>`` pieces are BYTE; ids 0/1/2 are unk/bos/eos; a dummy "▁" prefix,
no whitespace normalisation, byte fallback, split digits. ``tests/test_fidelity.py`` checks it
against the package's own encoder and against the ids known for Llama-2.

The vocabulary is built in CI from the package (``scripts/ci/fidelity_env.sh`` fetches it); it is
never committed. The protobuf is written by hand, so building needs no ``protobuf``.
"""

from __future__ import annotations

import base64
import re
import struct
from pathlib import Path

NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6


def read_package(js_file) -> tuple[list[str], list[tuple[int, int]]]:
    """(pieces in id order, merges as (left id, right id) in rank order) from llama-tokenizer.js."""
    text = Path(js_file).read_text(encoding="utf-8")
    vocab_b64 = re.search(r'const llama_vocab_base64 = "([^"]+)"', text).group(1)
    merges_b64 = re.search(r'const llama_merges_binary = "([^"]+)"', text).group(1)
    pieces = base64.b64decode(vocab_b64).decode("utf-8").split("\n")
    raw = base64.b64decode(merges_b64)
    ids = struct.unpack(f"<{len(raw) // 2}H", raw)  # little-endian uint16 pairs
    return pieces, list(zip(ids[0::2], ids[1::2]))


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32 fields are 10-byte two's complement varints
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value) -> bytes:
    if isinstance(value, float):
        return _varint(number << 3 | 5) + struct.pack("<f", value)
    if isinstance(value, (bytes, str)):
        data = value.encode("utf-8") if isinstance(value, str) else value
        return _varint(number << 3 | 2) + _varint(len(data)) + data
    return _varint(number << 3) + _varint(int(value))


def _piece(piece: str, score: float, kind: int) -> bytes:
    return _field(1, piece) + _field(2, score) + _field(3, kind)


def model_proto(pieces: list[str], merges: list[tuple[int, int]]) -> bytes:
    """The serialized sentencepiece ModelProto (field numbers from sentencepiece_model.proto)."""
    rank = {}
    for r, (a, b) in enumerate(merges):
        rank.setdefault(pieces[a] + pieces[b], r)
    kinds = {0: UNKNOWN, 1: CONTROL, 2: CONTROL}
    body = b""
    for i, piece in enumerate(pieces):
        kind = kinds.get(i, BYTE if re.fullmatch(r"<0x[0-9A-F]{2}>", piece) else NORMAL)
        score = -float(rank[piece]) if piece in rank else 0.0
        body += _field(1, _piece(piece, score, kind))
    trainer = (_field(3, 2) + _field(4, len(pieces)) + _field(25, True) + _field(35, True)  # BPE, split digits, bytes
               + _field(40, 0) + _field(41, 1) + _field(42, 2) + _field(43, -1)
               + _field(45, "<unk>") + _field(46, "<s>") + _field(47, "</s>"))
    normalizer = _field(1, "identity") + _field(3, True) + _field(4, False) + _field(5, True)
    return body + _field(2, trainer) + _field(3, normalizer)


def write_tokenizer_dir(js_file, out_dir, *, legacy: bool = False) -> Path:
    """A checkpoint-style tokenizer directory (LLaVA-1.5's three files) with Llama-2's vocabulary."""
    from dualfocus.tiny.tokenizer import write_tokenizer_configs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(model_proto(*read_package(js_file)))
    write_tokenizer_configs(out, legacy=legacy)
    return out
