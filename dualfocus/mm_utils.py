"""Image loading and preprocessing, and prompt tokenization with image placeholders (as LLaVA's)."""

from __future__ import annotations

import base64
import binascii
import io
import os

import numpy as np
import torch
from PIL import Image

from dualfocus.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX


class ImageLoadError(ValueError):
    """An image could not be read; the message names the file (or the record) and the cause."""


def load_image(image_file, *, from_base64: bool = False, record_id=None) -> Image.Image:
    """Open an image fully and convert it to RGB.

    ``image_file`` is a path, or with ``from_base64=True`` a base64 string (MMBench TSV rows; then
    ``record_id`` names the row in errors). Missing, unreadable, truncated or non-image data raise
    `ImageLoadError`. PIL's decompression-bomb guard stays on: an over-large image is an error too.
    """
    if from_base64:
        where = f"base64 image of record {record_id!r}"
        try:
            data = base64.b64decode("".join(str(image_file).split()), validate=True)
        except (binascii.Error, ValueError) as e:
            raise ImageLoadError(f"{where}: invalid base64 ({e})") from e
        source = io.BytesIO(data)
    else:
        where = os.fspath(image_file)
        source = where
    try:
        with Image.open(source) as image:
            image.load()  # decode now: a truncated file fails here, not later in the processor
            return to_rgb(image, where)
    except FileNotFoundError as e:
        raise ImageLoadError(f"{where}: file not found") from e
    except Image.DecompressionBombError as e:
        raise ImageLoadError(f"{where}: refused as a possible decompression bomb ({e})") from e
    except Image.UnidentifiedImageError as e:
        raise ImageLoadError(f"{where}: not a readable image ({e})") from e
    except OSError as e:  # permissions, a directory, truncated data, decoder errors
        raise ImageLoadError(f"{where}: cannot read image ({type(e).__name__}: {e})") from e


# 16-bit greyscale modes; Pillow's convert("RGB") clips their values at 255 (a 16-bit PNG came out white).
_UINT16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def to_rgb(image: Image.Image, where: str = "image") -> Image.Image:
    """Any PIL mode -> RGB, as the release for 8-bit modes, scaled (never clipped) for deeper ones.

    8-bit modes (1, L, P, RGB, CMYK, YCbCr, and LA, PA, RGBA) go through `convert("RGB")` as LLaVA
    does: alpha is dropped, not flattened on a background, so answers match the release's.
    16-bit, 32-bit and float greyscale (I;16*, I, F) map linearly to 0..255 (see `_source_range`).
    """
    try:
        if image.mode in _UINT16_MODES or image.mode in ("I", "F"):
            return Image.fromarray(_to_uint8(np.asarray(image), image.mode)).convert("RGB")  # (H, W) uint8: L
        return image.convert("RGB")
    except ValueError as e:  # a mode Pillow cannot convert (e.g. LAB without a profile)
        raise ImageLoadError(f"{where}: cannot convert PIL mode {image.mode} to RGB ({e})") from e


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """(H, W) 16/32-bit integers or floats -> (H, W) uint8, [lo, hi] mapped linearly to [0, 255]."""
    a = values.astype(np.float64)
    lo, hi = _source_range(a, mode)
    a = np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo)
    scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _source_range(a: np.ndarray, mode: str) -> tuple[float, float]:
    """The values that become 0 and 255: the type's range where the data fit it, else the data's own.

    I;16*: 0..65535. I: 0..65535 when the values fit (Pillow holds 16-bit files in mode I), else
    min..max. F: 0..1 or 0..255 when the values fit (float images, Pillow's own F), else min..max.
    """
    if mode in _UINT16_MODES:
        return 0.0, 65535.0
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    fits = [(0.0, 65535.0)] if mode == "I" else [(0.0, 1.0), (0.0, 255.0)]
    for type_lo, type_hi in fits:
        if type_lo <= lo and hi <= type_hi:
            return type_lo, type_hi
    return lo, hi


def load_image_from_base64(image: str, record_id=None) -> Image.Image:
    """LLaVA's name for `load_image(image, from_base64=True)` (but the result is RGB)."""
    return load_image(image, from_base64=True, record_id=record_id)


def expand2square(pil_img: Image.Image, background_color) -> Image.Image:
    """Pad to a square of side max(w, h) with ``background_color``, the image centred (floor offset)."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    side = max(width, height)
    result = Image.new(pil_img.mode, (side, side), background_color)
    result.paste(pil_img, ((side - width) // 2, (side - height) // 2))
    return result


def process_images(images, image_processor, model_cfg) -> torch.Tensor:
    """Images -> pixel values (N, 3, H, W), as LLaVA does.

    With ``model_cfg.image_aspect_ratio == "pad"`` each image is first padded to a square with the
    processor's mean colour (0-255); otherwise the processor is applied as is (CLIP: resize the
    shortest edge, centre-crop).
    """
    if getattr(model_cfg, "image_aspect_ratio", None) == "pad":
        fill = tuple(int(x * 255) for x in image_processor.image_mean)
        pixels = [
            image_processor.preprocess(expand2square(im, fill), return_tensors="pt")["pixel_values"][0]
            for im in images
        ]
        return torch.stack(pixels, dim=0)
    return image_processor(images, return_tensors="pt")["pixel_values"]


def tokenizer_image_token(
    prompt: str, tokenizer, image_token_index: int = IMAGE_TOKEN_INDEX, return_tensors=None
):
    """Tokenize ``prompt`` with ``image_token_index`` at each "<image>", exactly as LLaVA does.

    Each text chunk between "<image>" markers is tokenized on its own (``tokenizer(chunk).input_ids``,
    so each starts with the dummy "▁" prefix, e.g. "\\nWhat" -> ▁ <0x0A> What); the leading BOS of the
    first chunk is kept once and the BOS of every later chunk is dropped.
    """
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(DEFAULT_IMAGE_TOKEN)]
    input_ids = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(chunks[0][0])
    for i, chunk in enumerate(chunks):
        if i > 0:
            input_ids.append(image_token_index)
        input_ids.extend(chunk[offset:])
    # LLaVA inserts [image_token_index] * (offset + 1) and then drops `offset` items from it: one id.
    if return_tensors is None:
        return input_ids
    if return_tensors == "pt":
        return torch.tensor(input_ids, dtype=torch.long)
    raise ValueError(f"Unsupported tensor type: {return_tensors}")


def get_model_name_from_path(model_path: str) -> str:
    """'.../llava-v1.5-7b/' -> 'llava-v1.5-7b'; '.../run/checkpoint-500' -> 'run_checkpoint-500'."""
    parts = model_path.strip("/").split("/")
    if parts[-1].startswith("checkpoint-"):
        return parts[-2] + "_" + parts[-1]
    return parts[-1]
