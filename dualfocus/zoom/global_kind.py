"""The zoom bench's global questions: what only the whole image answers, and a crop loses.

A global scene (`make_global_scene`) is drawn like a local one (same pegboard, signs, glyphs,
distractors, background) but holds 3 to 6 signs: three of the four corner cells of the 4 x 4
pegboard and 0 to 3 other cells, their colours drawn with repeats from a palette of three. Each
scene gives three questions (`global_questions`):

* count: "How many signs are there?" -> "3" .. "6";
* colour count: "How many signs are red?" -> "0" .. "6" (the colour one of the scene's, or one
  it lacks);
* empty corner: "Which corner has no sign?" -> "top left" / "top right" / "bottom left" /
  "bottom right".

Why they are global, by construction (checked in tests/test_zoom_mixed.py on the scenes):

* a crop around any one region the box turn names loses the evidence. Signs sit in distinct
  224 px cells, at least 224 - 84 - 2 x 4 = 132 px apart edge to edge; DualFocus's crop around
  a sign (its box squared, 25 px added on every side) reaches 25 px past it, so it shows exactly
  one sign and at most one corner cell. Every answer depends on at least three signs (a count
  counts all of them; a colour count must rule each one in or out) or on all four corners (three
  filled, one empty);
* the whole image shows the evidence at this model's resolution: 896 px seen at 56, a sign is a
  ~5 px square of its colour in the middle of its 14 px patch (one tower patch per pegboard
  cell), so where the signs are and which colour each has is in the macro view; only the glyph
  (2.5 x 3.5 px) is not, and no global question asks for it.

The `sub_area` a global question trains with is `evidence_box`: the smallest box that covers all
of its evidence, i.e. every sign of the scene (each is counted or ruled out; the three filled
corners span the fourth). That is what the box turn's prompt asks ("the region this question
asks"), as for a local question, so every question has a box and the choice between the two
answers stays with the loss at inference, as DualFocus trains. Here that box spans the
pegboard (about 0.1 to 0.9 of each side), so its crop is about the whole image: the micro pass
has the macro pass's evidence and nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dualfocus.zoom.scene import CELL, CELLS, GLYPHS, SIGN_COLOURS, Scene, Sign, boxes_in_cells, draw_scene

CORNERS = {"top left": 0, "top right": CELLS - 1, "bottom left": CELLS * (CELLS - 1), "bottom right": CELLS * CELLS - 1}
EXTRA_SIGNS = (0, 4)  # signs besides the three filled corners, [low, high)
PALETTE = 3  # colours a global scene draws its signs from (with repeats)
COUNTS = tuple(str(n) for n in range(8))  # what a count's options are drawn from
COUNT = "How many signs are there?"
COLOUR_COUNT = "How many signs are {colour}?"
EMPTY_CORNER = "Which corner has no sign?"
TYPES = ("count", "colour_count", "empty_corner")


@dataclass(frozen=True)
class GlobalQuestion:
    type: str  # one of TYPES
    text: str
    answer: str
    options: tuple[str, ...]  # 4, in the order shown (the answer among them)


def cell_of(box) -> int:
    """The pegboard cell (row * CELLS + column) a sign box is centred in."""
    return (box[1] + box[3]) // 2 // CELL * CELLS + (box[0] + box[2]) // 2 // CELL


def make_global_scene(rng: np.random.Generator) -> Scene:
    """Three corners and 0-3 other cells hold signs, coloured from a palette of three (repeats)."""
    corners = list(CORNERS.values())
    empty = int(rng.integers(0, len(corners)))
    others = [c for c in range(CELLS * CELLS) if c not in corners]
    extra = rng.choice(others, size=int(rng.integers(*EXTRA_SIGNS)), replace=False)
    cells = [c for i, c in enumerate(corners) if i != empty] + [int(c) for c in extra]
    boxes = boxes_in_cells(rng, cells)
    palette = [list(SIGN_COLOURS)[int(c)] for c in rng.choice(len(SIGN_COLOURS), size=PALETTE, replace=False)]
    colours = [palette[int(rng.integers(0, PALETTE))] for _ in cells]
    glyphs = rng.choice(len(GLYPHS), size=len(cells), replace=False)
    signs = tuple(Sign(c, GLYPHS[int(g)], b) for c, g, b in zip(colours, glyphs, boxes))
    return draw_scene(rng, signs)


def empty_corner(scene: Scene) -> str:
    filled = {cell_of(s.box) for s in scene.signs}
    empty = [name for name, cell in CORNERS.items() if cell not in filled]
    if len(empty) != 1:
        raise ValueError(f"a global scene has exactly one empty corner, this one has {len(empty)}")
    return empty[0]


def evidence_box(scene: Scene) -> list[int]:
    """The smallest pixel box covering every sign: a global question's region (module docstring)."""
    return [min(s.box[0] for s in scene.signs), min(s.box[1] for s in scene.signs),
            max(s.box[2] for s in scene.signs), max(s.box[3] for s in scene.signs)]


def _count_options(answer: str, rng: np.random.Generator) -> tuple[str, ...]:
    others = [c for c in COUNTS if c != answer]
    picked = [answer] + [others[int(i)] for i in rng.choice(len(others), size=3, replace=False)]
    return tuple(picked[int(i)] for i in rng.permutation(4))


def global_questions(scene: Scene, rng: np.random.Generator) -> list[GlobalQuestion]:
    """The scene's three questions (count, colour count, empty corner), options in a random order."""
    present = [c for c in SIGN_COLOURS if any(s.colour == c for s in scene.signs)]
    absent = [c for c in SIGN_COLOURS if c not in present]
    candidates = present + [absent[int(rng.integers(0, len(absent)))]]
    colour = candidates[int(rng.integers(0, len(candidates)))]
    count = str(len(scene.signs))
    of_colour = str(sum(s.colour == colour for s in scene.signs))
    corner = empty_corner(scene)
    corners = tuple(list(CORNERS)[int(i)] for i in rng.permutation(len(CORNERS)))
    return [GlobalQuestion("count", COUNT, count, _count_options(count, rng)),
            GlobalQuestion("colour_count", COLOUR_COUNT.format(colour=colour), of_colour,
                           _count_options(of_colour, rng)),
            GlobalQuestion("empty_corner", EMPTY_CORNER, corner, corners)]


def corpus_lines() -> list[str]:
    """Every text line the global questions can produce (for the tokenizer)."""
    return [COUNT, EMPTY_CORNER, *(COLOUR_COUNT.format(colour=c) for c in SIGN_COLOURS), *CORNERS,
            *(f"{letter}. {c}" for letter in "ABCD" for c in CORNERS)]
