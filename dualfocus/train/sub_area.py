"""A training record's ``sub_area`` -> the second image: its box read in the record's units,
checked, and cropped as the inference pipeline crops a predicted box (`dualfocus.boxes`).

Units (``--sub_area_units``): ``auto`` (the original's rule) reads a box whose four values all lie
in [0, 1] as fractions of the width/height, any other box as pixels; ``normalized`` / ``pixel``
force one reading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw

from dualfocus import boxes

DRAW_COLOR, DRAW_WIDTH = (0, 255, 0), 5  # the original's draw_box_to_img


@dataclass(frozen=True)
class CropPolicy:
    """How a record's sub_area becomes the second image (the inference crop by default)."""

    units: str = "auto"  # auto | normalized | pixel
    process: bool = True  # square about the centre + pad (DualFocus's --process_sub_area)
    pad: int = boxes.ENLARGE_PIXELS
    draw: bool = False  # --draw_sub_region: outline the box before cropping

    def region(self, box_norm, width: int, height: int) -> boxes.Region:
        if self.process:
            return boxes.focus_region(box_norm, width, height, pad=self.pad, square=True)
        return boxes.focus_region(box_norm, width, height, pad=0, square=False)


def resolve_units(values, units: str = "auto") -> str:
    """"normalized" or "pixel": `units` unless "auto", which reads all-in-[0, 1] boxes as normalized."""
    if units not in ("auto", "normalized", "pixel"):
        raise ValueError(f"units must be auto, normalized or pixel, got {units!r}")
    if units != "auto":
        return units
    return "normalized" if all(0.0 <= float(v) <= 1.0 for v in values) else "pixel"


def normalized_sub_area(sub_area, width: int | None, height: int | None, units: str = "auto") -> boxes.Box:
    """The record's box as fractions of the image (x by width, y by height), validated.

    Raises `boxes.BoxError` (reason ``out_of_range`` for a box outside the image). Pixel boxes
    need the image size; with ``width=None`` only their shape is checked and they are returned as is.
    """
    if not isinstance(sub_area, (list, tuple)) or len(sub_area) != 4:
        raise boxes.BoxError(boxes.NO_BOX, f"sub_area must be [x1, y1, x2, y2], got {sub_area!r}")
    try:
        values = [float(v) for v in sub_area]
    except (TypeError, ValueError) as e:
        raise boxes.BoxError(boxes.NO_BOX, f"sub_area must hold 4 numbers, got {sub_area!r}") from e
    if not all(math.isfinite(v) for v in values):
        raise boxes.BoxError(boxes.OUT_OF_RANGE, f"sub_area {sub_area!r} is not finite")
    if resolve_units(values, units) == "normalized":
        return boxes.validate_box(values)
    x1, y1, x2, y2 = values
    if x2 <= x1 or y2 <= y1:
        raise boxes.BoxError(boxes.INVERTED if (x2 < x1 or y2 < y1) else boxes.DEGENERATE,
                             f"pixel sub_area {values} has no area")
    if width is None or height is None:
        return tuple(values)
    if min(values) < 0 or x2 > width or y2 > height:
        raise boxes.BoxError(boxes.OUT_OF_RANGE, f"pixel sub_area {values} is outside the {width} x {height} image")
    return boxes.validate_box((x1 / width, y1 / height, x2 / width, y2 / height))


def crop_sub_area(image: Image.Image, box_norm, policy: CropPolicy) -> tuple[Image.Image, boxes.Region]:
    """The second image of a DualFocus record: (crop, its pixel region)."""
    w, h = image.size
    if policy.draw:
        # The original draws the unsquared box (pixels, truncated) on the image the crop is cut from;
        # the first image is processed from a separate copy and stays clean.
        image = image.copy()
        x1, y1, x2, y2 = (int(v) for v in (box_norm[0] * w, box_norm[1] * h, box_norm[2] * w, box_norm[3] * h))
        ImageDraw.Draw(image).rectangle(((x1, y1), (x2, y2)), outline=DRAW_COLOR, width=DRAW_WIDTH)
    region = policy.region(box_norm, w, h)
    return boxes.crop(image, region), region
