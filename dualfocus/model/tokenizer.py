"""The Llama tokenizer as transformers 4.31.0 ran it, built on the ``sentencepiece`` library.

LLaVA-1.5 and the DualFocus checkpoints were trained and evaluated with transformers 4.31.0's slow
``LlamaTokenizer`` (tokenizers < 0.14), and token ids are what that tokenizer produced under the
checkpoint's own ``legacy`` flag (``tokenizer_config.json``; absent means ``true``):

* The text is split at special and added tokens (leftmost, longest match). The special tokens
  (``<s>``, ``</s>``, ``<unk>``) keep the spaces around them; other added tokens (``<im_patch>``)
  strip the spaces on both sides, as 4.31's ``tokenize`` did for tokens it had no ``AddedToken``
  for.
* ``legacy: true``: every text segment is ``SentencePieceProcessor.encode(segment)``, so each
  starts with sentencepiece's dummy "▁".
* ``legacy: false`` (LLaVA-1.5's config): "▁" in the text becomes a space, and a segment that
  follows a special token and does not start with a space loses the "▁" of its first piece; the
  stripped piece is looked up as is, ``<unk>`` (id 0) if the vocabulary lacks it. With Llama-2's
  vocabulary ``"...]</s>USER:"`` gives ``</s> US ER :`` (3308, 1001), not ``▁US`` (3148).

Decoding is 4.31's too: special tokens are never passed through sentencepiece, added tokens are
joined with spaces. ``tests/test_fidelity.py`` compares both directions with transformers 4.31.0
itself, on tiny vocabularies and on Llama-2's.

Loading reads only the checkpoint's own files (``tokenizer.model``, ``tokenizer_config.json``,
``special_tokens_map.json``, ``added_tokens.json``), runs no remote code, and needs neither
``protobuf`` nor transformers' tokenizer conversion.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import sentencepiece as spm
from transformers.tokenization_python import PreTrainedTokenizer
from transformers.tokenization_utils_base import AddedToken

from dualfocus.model.checkpoint_io import CheckpointError, read_json_object

SPIECE_UNDERLINE = "▁"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


class TokenizerFileError(CheckpointError):
    """A checkpoint's tokenizer files are missing or unreadable; the message names the file."""


class LlamaTokenizer(PreTrainedTokenizer):
    """transformers 4.31.0's slow ``LlamaTokenizer`` on transformers' Python tokenizer base."""

    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token=None,
                 add_bos_token=True, add_eos_token=False, legacy=True, clean_up_tokenization_spaces=False,
                 **kwargs):
        self.vocab_file = str(vocab_file)
        self.sp_model = spm.SentencePieceProcessor(model_file=self.vocab_file)  # before super(): it reads the vocab
        self.legacy, self.add_bos_token, self.add_eos_token = bool(legacy), add_bos_token, add_eos_token
        kwargs.pop("sp_model_kwargs", None)
        super().__init__(unk_token=unk_token, bos_token=bos_token, eos_token=eos_token, pad_token=pad_token,
                         clean_up_tokenization_spaces=clean_up_tokenization_spaces, **kwargs)

    @property
    def vocab_size(self) -> int:
        return self.sp_model.get_piece_size()

    def get_vocab(self) -> dict[str, int]:
        vocab = {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}
        vocab.update(self._added_tokens_encoder)
        return vocab

    # --- encoding -------------------------------------------------------------------------------

    def tokenize(self, text: str, **kwargs) -> list[str]:
        if not self.legacy:
            text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        tokens = []
        for segment in self._split_on_added(text):
            if segment in self._added_tokens_encoder:
                tokens.append(segment)
            elif segment:
                tokens.extend(self._tokenize(segment))
        return tokens

    def _split_on_added(self, text: str) -> list[str]:
        """["text", "</s>", "text", ...], with the spaces next to stripping tokens removed."""
        added = sorted(self._added_tokens_encoder, key=len, reverse=True)  # longest match first
        parts = [p for p in re.split("(" + "|".join(map(re.escape, added)) + ")", text) if p] if added else [text]
        keeps_spaces = {str(getattr(self, name)) for name in ("bos_token", "eos_token", "unk_token", "pad_token")
                        if getattr(self, name, None) is not None}
        for i, part in enumerate(parts):
            if part not in self._added_tokens_encoder:
                continue
            token = self._added_tokens_decoder[self._added_tokens_encoder[part]]
            lstrip, rstrip = (token.lstrip, token.rstrip) if part in keeps_spaces else (True, True)
            if rstrip and i + 1 < len(parts):
                parts[i + 1] = parts[i + 1].lstrip()
            if lstrip and i > 0:
                parts[i - 1] = parts[i - 1].rstrip()
        return parts

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        if self.legacy:
            return self.sp_model.encode(text, out_type=str)
        is_first = text.startswith(SPIECE_UNDERLINE)  # the "▁" `tokenize` put at the very start
        if is_first:
            text = text[1:]
        tokens = self.sp_model.encode(text, out_type=str)
        if not is_first and not text.startswith(" ") and tokens and tokens[0].startswith(SPIECE_UNDERLINE):
            tokens = ([tokens[0][1:]] if len(tokens[0]) > 1 else []) + tokens[1:]  # may become <unk>
        return tokens

    def _convert_token_to_id(self, token: str) -> int:
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index: int) -> str:
        return self.sp_model.id_to_piece(index)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        out = bos + list(token_ids_0) + eos
        return out if token_ids_1 is None else out + bos + list(token_ids_1) + eos

    def _eventual_warn_about_too_long_sequence(self, ids, max_length, verbose):
        """Silent: model_max_length is the training length, and the engines refuse a prompt past the
        model's positions with a named error (ContextLengthError) instead of a warning."""

    # --- decoding -------------------------------------------------------------------------------

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Pieces -> text; special tokens are copied, not decoded by sentencepiece (4.31's rule)."""
        specials = set(self.all_special_tokens)
        out, pieces, prev_special = "", [], False
        for i, token in enumerate(tokens):
            if token in specials:
                if not prev_special and i != 0:
                    out += " "
                out += self.sp_model.decode(pieces) + token
                pieces, prev_special = [], True
            else:
                pieces.append(token)
                prev_special = False
        return out + self.sp_model.decode(pieces)

    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None,
                spaces_between_special_tokens: bool = True, **kwargs) -> str:
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        texts, pieces = [], []
        for i in (i for i in ids if i not in skip):
            token = self.convert_ids_to_tokens(i)
            if i >= self.vocab_size:  # tokens added past the sentencepiece vocabulary stand alone
                if pieces:
                    texts.append(self.convert_tokens_to_string(pieces))
                texts.append(token)
                pieces = []
            else:
                pieces.append(token)
        if pieces:
            texts.append(self.convert_tokens_to_string(pieces))
        text = (" " if spaces_between_special_tokens else "").join(texts)
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean else text

    # --- files ----------------------------------------------------------------------------------

    def save_pretrained(self, save_directory, **kwargs) -> tuple[str, ...]:
        """The released LLaVA layout: tokenizer.model, tokenizer_config.json, special_tokens_map.json
        (and added_tokens.json when tokens were added), readable by transformers 4.31 and by us."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        if Path(self.vocab_file).resolve() != (out / "tokenizer.model").resolve():
            shutil.copyfile(self.vocab_file, out / "tokenizer.model")
        _write_json(out / "tokenizer_config.json", self._config_dict())
        _write_json(out / "special_tokens_map.json", self._special_tokens_dict())
        added = {t: i for t, i in self._added_tokens_encoder.items() if i >= self.vocab_size}
        if added:
            _write_json(out / "added_tokens.json", added)
        return tuple(str(out / n) for n in TOKENIZER_FILES)

    def _config_dict(self) -> dict:
        return {"add_bos_token": self.add_bos_token, "add_eos_token": self.add_eos_token,
                "bos_token": str(self.bos_token), "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
                "eos_token": str(self.eos_token), "legacy": self.legacy,
                "model_max_length": self.model_max_length, "pad_token": None, "padding_side": self.padding_side,
                "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer", "unk_token": str(self.unk_token)}

    def _special_tokens_dict(self) -> dict:
        def spec(content):
            return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}

        out = {"bos_token": spec(str(self.bos_token)), "eos_token": spec(str(self.eos_token)),
               "unk_token": spec(str(self.unk_token))}
        if self.pad_token is not None:
            out["pad_token"] = str(self.pad_token)
        return dict(sorted(out.items()))


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _read_json(path: Path) -> dict:
    return read_json_object(path, TokenizerFileError) if path.is_file() else {}


def _token_content(value):
    """A special-token entry as the configs write it: "<s>" or {"content": "<s>", ...}."""
    if isinstance(value, dict):
        return AddedToken(value["content"], lstrip=bool(value.get("lstrip")), rstrip=bool(value.get("rstrip")),
                          normalized=bool(value.get("normalized", False)), special=True)
    return value


_INIT_KEYS = ("add_bos_token", "add_eos_token", "legacy", "clean_up_tokenization_spaces", "padding_side")
_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


def load_tokenizer(path) -> LlamaTokenizer:
    """The tokenizer of a checkpoint directory, as transformers 4.31.0 loaded it (see the module doc).

    ``special_tokens_map.json`` overrides ``tokenizer_config.json`` (pad = ``<unk>`` in LLaVA's);
    added tokens come after the sentencepiece vocabulary at their saved ids.
    """
    path = Path(path)
    if not (path / "tokenizer.model").is_file():
        raise TokenizerFileError(
            f"{path}: no tokenizer.model (LLaVA checkpoints ship a sentencepiece tokenizer.model; "
            "pass --model-base with the base model's directory if this one has none)"
        )
    config, special = _read_json(path / "tokenizer_config.json"), _read_json(path / "special_tokens_map.json")
    kwargs = {k: config[k] for k in _INIT_KEYS if k in config}
    for key in _TOKEN_KEYS:
        if special.get(key, config.get(key)) is not None:
            kwargs[key] = _token_content(special.get(key, config.get(key)))
    if isinstance(config.get("model_max_length"), int):
        kwargs["model_max_length"] = config["model_max_length"]
    added = _saved_added_tokens(path, config)
    tokenizer = LlamaTokenizer(path / "tokenizer.model", added_tokens_decoder=added, **kwargs)
    past_vocab = sorted(i for i in added if i >= tokenizer.vocab_size)
    if past_vocab != list(range(tokenizer.vocab_size, tokenizer.vocab_size + len(past_vocab))):
        raise TokenizerFileError(f"{path}: added token ids {past_vocab} do not follow the "
                                 f"{tokenizer.vocab_size}-piece vocabulary without a gap")
    return tokenizer


def _saved_added_tokens(path: Path, config: dict) -> dict[int, AddedToken]:
    """id -> token for tokens saved past the vocabulary: added_tokens.json (4.31's file) or
    tokenizer_config.json's added_tokens_decoder (newer transformers, llava-hf's ``<image>``)."""
    out = {}
    for token_id, spec in config.get("added_tokens_decoder", {}).items():
        out[int(token_id)] = AddedToken(spec["content"], lstrip=bool(spec.get("lstrip")),
                                        rstrip=bool(spec.get("rstrip")), normalized=False,
                                        special=bool(spec.get("special")))
    for content, token_id in _read_json(path / "added_tokens.json").items():
        out[int(token_id)] = AddedToken(content, lstrip=False, rstrip=False, normalized=False, special=False)
    return out
