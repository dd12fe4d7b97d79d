"""Zoom-bench scenes: a large picture, a few coloured signs, each with a glyph too small to read
unless one zooms in.

A scene is IMAGE_SIZE x IMAGE_SIZE px (896) on a mid-tone background, with muted distractor shapes
(circles, triangles, rectangles, bars) and up to `SIGNS` (3) square signs in distinct bright
colours. The signs hang on a 4 x 4 pegboard of 224 px cells (one cell is one patch of the tower's
whole-image input), each SIGN_MIN..SIGN_MAX px (76-84) wide, centred in its cell give or take
JITTER px, carrying one black glyph of our own 5 x 7 font in solid 8 px font pixels (40 x 56 px).

Why this needs a zoom, by construction (tower input 56 px, 14 px patches: `dualfocus.zoom.model`):

* whole image: 896 -> 56 px, 16x smaller. A sign is a 5 px coloured square (where it is and
  which colour can be seen) with a dark 2.5 x 3.5 px smudge: a font pixel is half an input pixel,
  the glyph is unreadable.
* the crop DualFocus makes around the sign (the box squared, plus 25 px on every side: about
  130 px) -> 56 px: the glyph is about 17 x 24 px, font pixels of 3.4 px: readable.

For every pair of glyphs the crop's model input differs at least 40 times more than the whole
image's (tests/test_zoom.py). The loose grid and the glyph's size are choices for the size of the
model: a 16-token view and a 1M-parameter Llama trained for minutes on a CPU learn to read a glyph
only when it spans several image tokens, and find "the red sign" among three when signs sit one
per patch; the method's point (the crop reads what the whole image cannot) does not depend on
either.

Everything is drawn with integer coordinates from a seeded numpy generator (no fonts, no
anti-aliasing), so a seed gives the same pixels on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 896
SIGNS = 3
CELL = 224  # px: the pegboard's cells (4 x 4), one tower patch of the whole image each
CELLS = IMAGE_SIZE // CELL
SIGN_MIN, SIGN_MAX = 76, 84  # sign side, px
JITTER = 4  # px a sign may sit off its cell's centre
GLYPH_W, GLYPH_H = 5, 7  # font pixels
GLYPH_CELL = 8  # image px per font pixel (a solid square)
GLYPH_PX_W, GLYPH_PX_H = GLYPH_CELL * GLYPH_W, GLYPH_CELL * GLYPH_H  # 40 x 56

# The glyphs: digits and letters that are not option letters (A-D would read as a choice).
FONT = {
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
}
GLYPHS = tuple(FONT)

# Sign colours (named in the questions) and the muted colours of everything else.
SIGN_COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (35, 75, 225),
    "yellow": (240, 210, 0),
    "orange": (245, 130, 0),
    "purple": (140, 40, 190),
}
DISTRACTOR_COLOURS = ((60, 60, 66), (190, 190, 182), (150, 105, 60), (205, 185, 150), (85, 100, 80),
                      (70, 55, 45), (210, 210, 220), (160, 170, 150))
# Mid-tone backgrounds, near CLIP's normalisation mean (122, 116, 104): a pale one (~235) becomes
# +1.6 sigma on every channel of every patch, and 94% of the energy of the untrained tower's image
# tokens was then one vector shared by all 16; on a mid-tone background the signs are what the
# tokens differ by (a third shared), and the model starts finding them within a few hundred steps.
BACKGROUNDS = ((124, 118, 106), (118, 122, 110), (128, 120, 112), (120, 120, 120), (116, 118, 124))
DISTRACTORS = (6, 11)  # how many, [low, high)
DISTRACTOR_GAP = 6  # px between a distractor and a sign


@dataclass(frozen=True)
class Sign:
    colour: str
    glyph: str
    box: tuple[int, int, int, int]  # pixels x1, y1, x2, y2 (end exclusive: the sign is x1..x2-1)


@dataclass(frozen=True)
class Scene:
    image: Image.Image
    signs: tuple[Sign, ...]


def glyph_pixels(glyph: str, cell: int = GLYPH_CELL) -> set[tuple[int, int]]:
    """The (x, y) pixels of a glyph: each font pixel a solid `cell` x `cell` square."""
    return {(cell * c + dx, cell * r + dy) for r, line in enumerate(FONT[glyph]) for c, ch in enumerate(line)
            if ch == "#" for dx in range(cell) for dy in range(cell)}


def draw_glyph(draw: ImageDraw.ImageDraw, glyph: str, left: int, top: int, colour=(0, 0, 0)) -> None:
    for r, line in enumerate(FONT[glyph]):
        for c, ch in enumerate(line):
            if ch == "#":
                x, y = left + GLYPH_CELL * c, top + GLYPH_CELL * r
                draw.rectangle((x, y, x + GLYPH_CELL - 1, y + GLYPH_CELL - 1), fill=colour)


def draw_sign(draw: ImageDraw.ImageDraw, sign: Sign) -> None:
    """The coloured square and its black glyph, centred (floor)."""
    x1, y1, x2, y2 = sign.box
    draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=SIGN_COLOURS[sign.colour])
    draw_glyph(draw, sign.glyph, x1 + (x2 - x1 - GLYPH_PX_W) // 2, y1 + (y2 - y1 - GLYPH_PX_H) // 2)


def _overlaps(a, b, gap: int) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def _place_signs(rng: np.random.Generator, count: int) -> list[tuple[int, int, int, int]]:
    """`count` signs in distinct cells of the pegboard, each about centred in its cell."""
    return boxes_in_cells(rng, rng.choice(CELLS * CELLS, size=count, replace=False))


def boxes_in_cells(rng: np.random.Generator, cells) -> list[tuple[int, int, int, int]]:
    """One sign box per pegboard cell (index = row * CELLS + column), about centred in it."""
    placed = []
    for cell in cells:
        side = int(rng.integers(SIGN_MIN, SIGN_MAX + 1))
        col, row = int(cell) % CELLS, int(cell) // CELLS
        x = CELL * col + (CELL - side) // 2 + int(rng.integers(-JITTER, JITTER + 1))
        y = CELL * row + (CELL - side) // 2 + int(rng.integers(-JITTER, JITTER + 1))
        placed.append((x, y, x + side, y + side))
    return placed


def _draw_distractor(draw: ImageDraw.ImageDraw, rng: np.random.Generator, keep_out) -> None:
    """One muted shape that stays DISTRACTOR_GAP px away from every sign (tries until it fits)."""
    while True:
        kind = int(rng.integers(0, 4))
        w, h = int(rng.integers(36, 160)), int(rng.integers(36, 160))
        if kind == 3:  # a bar
            w, h = (int(rng.integers(120, 320)), int(rng.integers(10, 20)))[:: 1 if rng.random() < 0.5 else -1]
        x, y = int(rng.integers(0, IMAGE_SIZE - w)), int(rng.integers(0, IMAGE_SIZE - h))
        box = (x, y, x + w, y + h)
        if any(_overlaps(box, k, DISTRACTOR_GAP) for k in keep_out):
            continue
        colour = DISTRACTOR_COLOURS[int(rng.integers(0, len(DISTRACTOR_COLOURS)))]
        if kind == 0:
            draw.ellipse((x, y, x + w - 1, y + h - 1), fill=colour)
        elif kind == 1:
            draw.polygon([(x, y + h - 1), (x + w - 1, y + h - 1), (x + w // 2, y)], fill=colour)
        else:
            draw.rectangle((x, y, x + w - 1, y + h - 1), fill=colour)
        return


def make_scene(rng: np.random.Generator, signs: int = SIGNS) -> Scene:
    """One scene from the generator's next draws: distractors first, then `signs` signs on top."""
    boxes = _place_signs(rng, signs)
    colours = rng.choice(len(SIGN_COLOURS), size=signs, replace=False)
    glyphs = rng.choice(len(GLYPHS), size=signs, replace=False)
    signs = tuple(Sign(list(SIGN_COLOURS)[int(c)], GLYPHS[int(g)], b) for c, g, b in zip(colours, glyphs, boxes))
    return draw_scene(rng, signs)


def draw_scene(rng: np.random.Generator, signs: tuple[Sign, ...]) -> Scene:
    """The picture of `signs`: a background and distractors from the generator's next draws, the signs on top."""
    boxes = [s.box for s in signs]
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[int(rng.integers(0, len(BACKGROUNDS)))])
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(*DISTRACTORS))):
        _draw_distractor(draw, rng, boxes)
    for sign in signs:
        draw_sign(draw, sign)
    return Scene(image, signs)
