"""From the box the model writes to the pixels of the crop the micro pass sees.

DualFocus asks the model for "the bounding box coordinate of the region this question asks" and
gets text such as ``[0.12, 0.34, 0.56, 0.78]``: x1, y1, x2, y2 as fractions of the image width
and height. Three steps turn it into a crop:

1. `parse_box(text)`: the first four comma-separated numbers in the text (brackets optional, text
   around them allowed, ints or floats, a sign kept), then `validate_box`.
2. `focus_region(box, width, height)`: the original's arithmetic, step for step (its
   ``dualfocus/misc/boxes.py``: ``denorm_bbox`` -> ``expand_box`` -> ``enlarge_box`` ->
   ``astype(np.int32)``):

   - denormalise in float64: ``x * width``, ``y * height``;
   - cast to float32; grow to a square about the box centre, side = the longer side; clip x to
     ``[0, width - 1]`` and y to ``[0, height - 1]`` (so the square is cut at the border, not moved);
   - pad ``pad`` (25) pixels on every side; clip again to ``[0, width - 1]`` / ``[0, height - 1]``;
   - truncate to integers (int32, towards zero; every value is >= 0 here).

   The crop is ``image[y1:y2, x1:x2]``: the end is exclusive, and since the clip bound is
   ``width - 1`` the last pixel column and row of the image are never in a crop. That is the
   original's behaviour, kept so crops match the released evaluation pixel for pixel.
3. `crop(image, region)`: ``PIL.Image.crop`` with that region (identical to the numpy slice).

Bad boxes: what the original did and what we do
-----------------------------------------------
The original wrapped these steps in ``try: ... except Exception`` and took any crop that came out.
We refuse a box that does not describe a region of the image and say why; the caller keeps the
macro answer and records the reason (``BoxError.reason``):

``no_box``        fewer than four comma-separated numbers. (Original: IndexError -> fallback; same.)
``out_of_range``  a coordinate < 0, or > 1 while not all four are whole numbers. (Original: the
                  regex dropped the minus sign, ``-0.1`` read as ``0.1``; values > 1 were scaled by
                  the image size and clipped to the border: a silent, unrelated crop.)
``pixel_units``   all four are whole numbers >= 0 and one is > 1, e.g. ``[120, 45, 300, 200]``: a
                  box in pixels, not fractions. (Original: multiplied by the image size again and
                  clipped: the crop became the bottom-right corner of the image.)
``inverted``      x2 < x1 or y2 < y1. (Original: a negative side; the square and the slice went
                  wrong, usually an empty array and a crash outside the ``try``.)
``degenerate``    x2 == x1 or y2 == y1: zero area. (Original: a square grown from the other side
                  only, or a 50 x 50 patch around a point.)
``empty_crop``    the region has no pixels after clipping (an image 1 pixel wide or high).
                  (Original: an empty array; ``process_images`` crashed outside the ``try``.)

One more difference: the original asserted ``not np.all(box_in_pixels <= 1)`` (meant to catch a box
that was never denormalised), so a valid box inside the top-left 1 x 1 pixel was refused. We check
the units before denormalising instead, and crop such a box like any other.
"""

from __future__ import annotations

import math
import re

import numpy as np
from PIL import Image

NO_BOX = "no_box"
OUT_OF_RANGE = "out_of_range"
PIXEL_UNITS = "pixel_units"
INVERTED = "inverted"
DEGENERATE = "degenerate"
EMPTY_CROP = "empty_crop"
BOX_ERROR_REASONS = (NO_BOX, OUT_OF_RANGE, PIXEL_UNITS, INVERTED, DEGENERATE, EMPTY_CROP)

ENLARGE_PIXELS = 25  # the original's enlarge_box default: context around the squared box

_NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
_BOX_RE = re.compile(rf"({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})")

Box = tuple[float, float, float, float]
Region = tuple[int, int, int, int]


class BoxError(ValueError):
    """A box that cannot be used for a crop; ``reason`` is one of `BOX_ERROR_REASONS`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_box(text: str) -> Box:
    """The first box ``x1, y1, x2, y2`` in ``text``, validated by `validate_box`.

    >>> parse_box("The region is [0.1, 0.2, 0.5, 0.6].")
    (0.1, 0.2, 0.5, 0.6)
    """
    match = _BOX_RE.search(text)
    if match is None:
        raise BoxError(NO_BOX, f"no 'x1, y1, x2, y2' in {text!r}")
    box = tuple(float(v) for v in match.groups())
    validate_box(box)
    return box


def validate_box(box) -> Box:
    """Check that ``box`` is a normalised ``(x1, y1, x2, y2)`` with positive area; return it.

    Raises `BoxError` with reason ``out_of_range``, ``pixel_units``, ``inverted`` or ``degenerate``
    (checked in that order; see the module docstring).
    """
    if len(box) != 4:
        raise BoxError(NO_BOX, f"a box has 4 coordinates, got {len(box)}: {box!r}")
    x1, y1, x2, y2 = (float(v) for v in box)
    values = (x1, y1, x2, y2)
    if not all(math.isfinite(v) for v in values) or min(values) < 0:
        raise BoxError(OUT_OF_RANGE, f"coordinates must lie in [0, 1], got {values}")
    if max(values) > 1:
        if all(v.is_integer() for v in values):
            raise BoxError(PIXEL_UNITS, f"looks like pixels, not fractions of the image: {values}")
        raise BoxError(OUT_OF_RANGE, f"coordinates must lie in [0, 1], got {values}")
    if x2 < x1 or y2 < y1:
        raise BoxError(INVERTED, f"need x1 <= x2 and y1 <= y2, got {values}")
    if x2 == x1 or y2 == y1:
        raise BoxError(DEGENERATE, f"zero width or height: {values}")
    return values


def focus_region(box_norm, width: int, height: int, pad: int = ENLARGE_PIXELS, square: bool = True) -> Region:
    """Integer pixel region ``(x1, y1, x2, y2)`` (end exclusive) to crop for a normalised box.

    With the defaults this is the original's arithmetic exactly (see the module docstring);
    ``square=False`` skips the squaring, ``pad`` changes the margin.
    """
    x1, y1, x2, y2 = validate_box(box_norm)
    if width < 1 or height < 1:
        raise BoxError(EMPTY_CROP, f"image has no pixels: {width} x {height}")
    # denorm_bbox: float64, x by the width, y by the height.
    pixels = np.array([x1 * width, y1 * height, x2 * width, y2 * height], dtype=np.float64)
    region = pixels.astype(np.float32)  # expand_box and enlarge_box work in float32
    if square:
        region = _square(region, width, height)
    region = _clip(region + np.array([-pad, -pad, pad, pad], dtype=np.float32), width, height)
    left, top, right, bottom = (int(v) for v in region.astype(np.int32))
    if right <= left or bottom <= top:
        raise BoxError(
            EMPTY_CROP, f"no pixels left in {(left, top, right, bottom)} of a {width} x {height} image"
        )
    return left, top, right, bottom


def _square(region: np.ndarray, width: int, height: int) -> np.ndarray:
    """The square about the centre with the longer side, clipped (expand_box), in float32."""
    centre = (region[2:] + region[:2]) / 2.0  # (2,) cx, cy
    side = np.max(region[2:] - region[:2])
    half = side / 2.0
    return _clip(np.concatenate([centre - half, centre + half]), width, height)


def _clip(region: np.ndarray, width: int, height: int) -> np.ndarray:
    out = region.copy()
    out[0::2] = np.clip(out[0::2], 0.0, float(width) - 1)
    out[1::2] = np.clip(out[1::2], 0.0, float(height) - 1)
    return out


def crop(image: Image.Image, region: Region) -> Image.Image:
    """The RGB crop ``image[y1:y2, x1:x2]`` of a region from `focus_region`."""
    left, top, right, bottom = region
    if not (0 <= left < right <= image.width and 0 <= top < bottom <= image.height):
        raise BoxError(EMPTY_CROP, f"region {region} is not inside a {image.width} x {image.height} image")
    return image.crop((left, top, right, bottom)).convert("RGB")


def box_to_text(box) -> str:
    """A box the way the training data writes it: ``[0.12, 0.34, 0.56, 0.78]`` (two decimals)."""
    x1, y1, x2, y2 = box
    return f"[{x1:.2f}, {y1:.2f}, {x2:.2f}, {y2:.2f}]"
