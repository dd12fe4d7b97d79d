"""Zoom-bench scenes: a large picture, a few coloured signs, each with a glyph too small to read
unless one zooms in.

A scene is IMAGE_SIZE x IMAGE_SIZE px (448) on a pale background, with muted distractor shapes
(circles, triangles, rectangles, bars) and `SIGNS` (3) square signs in distinct bright colours.
Each sign is SIGN_MIN..SIGN_MAX px (44-60) wide, with a white panel in its middle that carries
one glyph of our own 5 x 7 pixel font, drawn at 1 px per font pixel, in black.

Why this needs a zoom, by construction (tower input 112 px, `dualfocus.zoom.model`):

* whole image: 448 -> 112 px, 4x smaller. A sign stays a clear 11-15 px coloured square (where it
  is and what colour it is can be seen), but its glyph shrinks to about 1.3 x 1.8 px with strokes
  a quarter of a pixel wide: unreadable.
* the crop DualFocus makes around the sign (the box squared, plus 25 px on every side:
  94-110 px) -> 112 px: the glyph is about 6 x 8 px with 1 px strokes: readable.

Everything is drawn with integer coordinates from a seeded numpy generator (no fonts, no
anti-aliasing), so a seed gives the same pixels on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 448
SIGNS = 3
SIGN_MIN, SIGN_MAX = 44, 60  # sign side, px
SIGN_GAP = 12  # px between signs (and from the border)
PANEL_MARGIN = 3  # px of white around the glyph
GLYPH_W, GLYPH_H = 5, 7
GLYPH_SCALE = 1  # image px per font pixel

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
DISTRACTOR_COLOURS = ((128, 128, 128), (90, 90, 100), (150, 105, 60), (200, 180, 150), (170, 170, 150),
                      (110, 80, 60), (185, 185, 195), (140, 150, 130))
BACKGROUNDS = ((236, 232, 222), (226, 232, 236), (232, 236, 226), (240, 236, 236), (228, 228, 228))
DISTRACTORS = (6, 11)  # how many, [low, high)


@dataclass(frozen=True)
class Sign:
    colour: str
    glyph: str
    box: tuple[int, int, int, int]  # pixels x1, y1, x2, y2 (end exclusive: the sign is x1..x2-1)


@dataclass(frozen=True)
class Scene:
    image: Image.Image
    signs: tuple[Sign, ...]


def draw_glyph(draw: ImageDraw.ImageDraw, glyph: str, left: int, top: int, colour=(0, 0, 0), scale: int = 1) -> None:
    for row, line in enumerate(FONT[glyph]):
        for col, cell in enumerate(line):
            if cell == "#":
                x, y = left + col * scale, top + row * scale
                draw.rectangle((x, y, x + scale - 1, y + scale - 1), fill=colour)


def draw_sign(draw: ImageDraw.ImageDraw, sign: Sign) -> None:
    """The coloured square, its white panel and the glyph, centred (floor) in the square."""
    x1, y1, x2, y2 = sign.box
    draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=SIGN_COLOURS[sign.colour])
    pw, ph = GLYPH_W * GLYPH_SCALE + 2 * PANEL_MARGIN, GLYPH_H * GLYPH_SCALE + 2 * PANEL_MARGIN
    px, py = x1 + (x2 - x1 - pw) // 2, y1 + (y2 - y1 - ph) // 2
    draw.rectangle((px, py, px + pw - 1, py + ph - 1), fill=(255, 255, 255))
    draw_glyph(draw, sign.glyph, px + PANEL_MARGIN, py + PANEL_MARGIN, scale=GLYPH_SCALE)


def _overlaps(a, b, gap: int) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def _place_signs(rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    placed: list[tuple[int, int, int, int]] = []
    while len(placed) < SIGNS:
        side = int(rng.integers(SIGN_MIN, SIGN_MAX + 1))
        x = int(rng.integers(SIGN_GAP, IMAGE_SIZE - SIGN_GAP - side + 1))
        y = int(rng.integers(SIGN_GAP, IMAGE_SIZE - SIGN_GAP - side + 1))
        box = (x, y, x + side, y + side)
        if not any(_overlaps(box, other, SIGN_GAP) for other in placed):
            placed.append(box)
    return placed


def _draw_distractor(draw: ImageDraw.ImageDraw, rng: np.random.Generator, keep_out) -> None:
    """One muted shape that stays SIGN_GAP px away from every sign (tries until it fits)."""
    while True:
        kind = int(rng.integers(0, 4))
        w, h = int(rng.integers(18, 80)), int(rng.integers(18, 80))
        if kind == 3:  # a bar
            w, h = (int(rng.integers(60, 160)), int(rng.integers(5, 10)))[:: 1 if rng.random() < 0.5 else -1]
        x, y = int(rng.integers(0, IMAGE_SIZE - w)), int(rng.integers(0, IMAGE_SIZE - h))
        box = (x, y, x + w, y + h)
        if any(_overlaps(box, k, SIGN_GAP // 2) for k in keep_out):
            continue
        colour = DISTRACTOR_COLOURS[int(rng.integers(0, len(DISTRACTOR_COLOURS)))]
        if kind == 0:
            draw.ellipse((x, y, x + w - 1, y + h - 1), fill=colour)
        elif kind == 1:
            draw.polygon([(x, y + h - 1), (x + w - 1, y + h - 1), (x + w // 2, y)], fill=colour)
        else:
            draw.rectangle((x, y, x + w - 1, y + h - 1), fill=colour)
        return


def make_scene(rng: np.random.Generator) -> Scene:
    """One scene from the generator's next draws: distractors first, then the signs on top."""
    boxes = _place_signs(rng)
    colours = rng.choice(len(SIGN_COLOURS), size=SIGNS, replace=False)
    glyphs = rng.choice(len(GLYPHS), size=SIGNS, replace=False)
    signs = tuple(Sign(list(SIGN_COLOURS)[int(c)], GLYPHS[int(g)], b) for c, g, b in zip(colours, glyphs, boxes))
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[int(rng.integers(0, len(BACKGROUNDS)))])
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(*DISTRACTORS))):
        _draw_distractor(draw, rng, boxes)
    for sign in signs:
        draw_sign(draw, sign)
    return Scene(image, signs)
