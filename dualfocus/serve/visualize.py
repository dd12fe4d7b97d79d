"""A picture of one DualFocus answer (PIL only): where the model looked and what it said.

Left: the image with the predicted box (red, as the model wrote it) and the crop region the micro
pass saw (blue: the box squared and padded, clipped to the image). Right: the crop itself.
Below: the question, each pass's answer, the candidate losses and the choice.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from dualfocus.focus.pipeline import FocusResult

PANEL = 320  # px: each image panel's longer side (small images are enlarged, large ones reduced)
MARGIN = 12
BOX_COLOUR = (230, 40, 40)
CROP_COLOUR = (40, 110, 240)
TEXT_COLOUR = (20, 20, 20)
BACKGROUND = (250, 250, 250)
WRAP = 78  # characters per text line


def _font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1)
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def _fit(image: Image.Image, side: int = PANEL) -> tuple[Image.Image, float]:
    """The image scaled so its longer side is `side` px (nearest-neighbour: pixels stay visible)."""
    scale = side / max(image.width, image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.convert("RGB").resize(size, Image.NEAREST), scale


def describe(result: FocusResult, question: str) -> list[str]:
    """The text under the pictures, one step per line."""
    lines = [("Q: " if k == 0 else "   ") + part for k, part in enumerate(question.split("\n"))]
    lines.append(f"macro answer: {result.macro_answer!r} (raw {result.macro_raw!r})")
    if result.mode == "macro":
        lines.append("mode: macro (plain LLaVA, one pass)")
    else:
        lines.append(f"box text: {result.box_text!r}")
        if result.box is None:
            lines.append(f"box unusable ({result.fallback}): no micro pass")
        else:
            lines.append(f"box: {[round(v, 3) for v in result.box]}  crop px: {result.crop}")
            lines.append(f"micro answer: {result.micro_answer!r} (raw {result.micro_raw!r})")
    if result.losses is not None:
        losses = ", ".join(f"{c!r}: {x:.4f}" for c, x in zip(result.candidates, result.losses))
        lines.append(f"candidate losses: {losses}")
    if result.error:
        lines.append(f"error: {result.error}")
    lines.append(f"choice: {result.choice} -> answer {result.text!r}")
    return lines


def focus_panel(image: Image.Image, result: FocusResult, side: int = PANEL) -> Image.Image:
    """The image, longer side `side` px, with the crop region (blue) and the model's box (red) drawn."""
    panel, scale = _fit(image, side)
    width = max(3, round(side / 110))  # 3 px at PANEL: lines stay visible on larger panels
    draw = ImageDraw.Draw(panel)
    if result.crop is not None:
        x1, y1, x2, y2 = result.crop
        draw.rectangle([x1 * scale, y1 * scale, x2 * scale - 1, y2 * scale - 1], outline=CROP_COLOUR, width=width)
    if result.box is not None:
        bx1, by1, bx2, by2 = result.box
        w, h = image.width * scale, image.height * scale
        draw.rectangle([bx1 * w, by1 * h, bx2 * w - 1, by2 * h - 1], outline=BOX_COLOUR, width=width)
    return panel


def crop_panel(image: Image.Image, result: FocusResult, side: int = PANEL) -> Image.Image:
    """What the micro pass saw, longer side `side` px; a grey card saying why when there was no crop."""
    if result.crop is not None:
        return _fit(image.crop(tuple(result.crop)), side)[0]
    card = Image.new("RGB", (side // 2, side // 2), (225, 225, 225))
    ImageDraw.Draw(card).text((8, side // 4 - 8), f"no crop\n({result.fallback or 'macro mode'})",
                              fill=TEXT_COLOUR, font=_font())
    return card


def render(image: Image.Image, result: FocusResult, question: str) -> Image.Image:
    """The picture: image with box and crop region, the crop, and the trace as text."""
    font = _font()
    left, right = focus_panel(image, result), crop_panel(image, result)
    lines = [wrapped for line in describe(result, question) for wrapped in textwrap.wrap(line, WRAP) or [""]]
    legend = [("box (model)", BOX_COLOUR), ("crop (micro pass)", CROP_COLOUR)]
    line_h = int(font.size * 1.4) if hasattr(font, "size") else 16
    width = max(left.width + right.width + 3 * MARGIN, 7 * WRAP + 2 * MARGIN)
    top = MARGIN + line_h  # legend row
    height = top + max(left.height, right.height) + MARGIN + line_h * len(lines) + MARGIN
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    canvas.paste(left, (MARGIN, top))
    canvas.paste(right, (2 * MARGIN + left.width, top))
    draw = ImageDraw.Draw(canvas)
    x = MARGIN
    for label, colour in legend:
        draw.rectangle([x, MARGIN, x + 12, MARGIN + 12], outline=colour, width=3)
        draw.text((x + 18, MARGIN - 1), label, fill=TEXT_COLOUR, font=font)
        x += 40 + 8 * len(label)
    y = top + max(left.height, right.height) + MARGIN
    for line in lines:
        draw.text((MARGIN, y), line, fill=TEXT_COLOUR, font=font)
        y += line_h
    return canvas


def save_visualization(image: Image.Image, result: FocusResult, question: str, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    render(image, result, question).save(out)
    return out
