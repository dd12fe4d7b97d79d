"""dualfocus.boxes: parsing, validation, the original's crop arithmetic, and the crop itself."""

import random

import numpy as np
import pytest
from PIL import Image

from dualfocus.boxes import (
    DEGENERATE,
    EMPTY_CROP,
    INVERTED,
    NO_BOX,
    OUT_OF_RANGE,
    PIXEL_UNITS,
    BoxError,
    box_to_text,
    crop,
    focus_region,
    parse_box,
    validate_box,
)

# -- parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, box",
    [
        ("[0.12, 0.34, 0.56, 0.78]", (0.12, 0.34, 0.56, 0.78)),
        ("0.12, 0.34, 0.56, 0.78", (0.12, 0.34, 0.56, 0.78)),  # brackets optional
        ("(0.1,0.2,0.3,0.4)", (0.1, 0.2, 0.3, 0.4)),
        ("The region is [0.1, 0.2, 0.5, 0.6] in the image.", (0.1, 0.2, 0.5, 0.6)),  # text around
        ("x: 0.1 , 0.2,0.3,   0.4.", (0.1, 0.2, 0.3, 0.4)),  # spaces around commas, final full stop
        ("[0.1, 0.2, 0.3, 0.4] and [0.5, 0.6, 0.7, 0.8]", (0.1, 0.2, 0.3, 0.4)),  # several: the first
        ("[0, 0, 1, 1]", (0.0, 0.0, 1.0, 1.0)),  # ints
        ("[.1, .2, .3, .4]", (0.1, 0.2, 0.3, 0.4)),
        ("[0.1, 0.2, 1., 1.]", (0.1, 0.2, 1.0, 1.0)),
    ],
)
def test_parse_box(text, box):
    assert parse_box(text) == box


@pytest.mark.parametrize(
    "text, reason",
    [
        ("I cannot tell.", NO_BOX),
        ("", NO_BOX),
        ("[0.1, 0.2, 0.3]", NO_BOX),  # three numbers
        ("[0.1; 0.2; 0.3; 0.4]", NO_BOX),
        ("[120, 45, 300, 200]", PIXEL_UNITS),
        ("[0.5, 0.2, 1.5, 0.9]", OUT_OF_RANGE),  # > 1 but not whole numbers: not pixels either
        ("[-0.1, 0.2, 0.5, 0.6]", OUT_OF_RANGE),  # the original's regex read this as 0.1
        ("[0.1, -0.2, 0.5, 0.6]", OUT_OF_RANGE),
        ("[0.5, 0.2, 0.3, 0.6]", INVERTED),
        ("[0.1, 0.6, 0.3, 0.2]", INVERTED),
        ("[0.3, 0.2, 0.3, 0.6]", DEGENERATE),
        ("[0.1, 0.4, 0.3, 0.4]", DEGENERATE),
        ("[0.2, 0.2, 0.2, 0.2]", DEGENERATE),
    ],
)
def test_parse_box_failures_name_their_reason(text, reason):
    with pytest.raises(BoxError) as info:
        parse_box(text)
    assert info.value.reason == reason
    assert str(info.value).startswith(reason + ":")
    assert isinstance(info.value, ValueError)


def test_pixel_units_checked_before_order():
    with pytest.raises(BoxError) as info:
        validate_box((300, 45, 120, 200))
    assert info.value.reason == PIXEL_UNITS


def test_validate_box_rejects_nan_and_wrong_length():
    with pytest.raises(BoxError) as info:
        validate_box((0.1, float("nan"), 0.3, 0.4))
    assert info.value.reason == OUT_OF_RANGE
    with pytest.raises(BoxError) as info:
        validate_box((0.1, 0.2, 0.3))
    assert info.value.reason == NO_BOX


def test_box_to_text_round_trips():
    assert box_to_text((0.123, 0.3, 0.5, 0.987)) == "[0.12, 0.30, 0.50, 0.99]"
    assert parse_box(box_to_text((0.12, 0.3, 0.5, 0.99))) == (0.12, 0.3, 0.5, 0.99)


# -- the original's arithmetic ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "box, width, height, region",
    [
        # 640x480: pixels (64, 96, 256, 240), 192x144 -> square side 192 about (160, 168):
        # (64, 72, 256, 264); + 25 each side -> (39, 47, 281, 289).
        ((0.1, 0.2, 0.4, 0.5), 640, 480, (39, 47, 281, 289)),
        # Top-left border: pixels (0, 0, 20, 40) -> square (-10, 0, 30, 40), clipped to (0, 0, 30, 40)
        # (cut, not shifted); + 25 -> (-25, -25, 55, 65) clipped -> (0, 0, 55, 65).
        ((0.0, 0.0, 0.2, 0.5), 100, 80, (0, 0, 55, 65)),
        # Bottom-right border: pixels (90, 72, 100, 80) -> square (90, 71, 100, 81) clipped to
        # (90, 71, 99, 79): the bound is size - 1; + 25 -> (65, 46, 124, 104) clipped -> (65, 46, 99, 79).
        ((0.9, 0.9, 1.0, 1.0), 100, 80, (65, 46, 99, 79)),
        # Truncation: pixels (10.605, 20.705, 30.805, 40.905) -> side 20.2 -> + 25 -> (-14.4, -4.3,
        # 55.805, 65.905) -> clipped and truncated -> (0, 0, 55, 65).
        ((0.105, 0.205, 0.305, 0.405), 101, 101, (0, 0, 55, 65)),
        # Whole image.
        ((0.0, 0.0, 1.0, 1.0), 64, 48, (0, 0, 63, 47)),
        # The original's assert refused this one (all pixel values <= 1); we crop it.
        ((0.0, 0.0, 0.1, 0.1), 10, 10, (0, 0, 9, 9)),
    ],
)
def test_focus_region_hand_computed(box, width, height, region):
    assert focus_region(box, width, height) == region


def test_focus_region_options():
    # No squaring: (64, 96, 256, 240) + 25 -> (39, 71, 281, 265).
    assert focus_region((0.1, 0.2, 0.4, 0.5), 640, 480, square=False) == (39, 71, 281, 265)
    assert focus_region((0.1, 0.2, 0.4, 0.5), 640, 480, pad=0) == (64, 72, 256, 264)


def _original_region(box, width, height):
    """The original's denorm_bbox -> expand_box -> enlarge_box -> astype(int32), as numpy ops on (1, 4)."""
    b = np.array(box).reshape(-1, 4)  # float64
    b[:, ::2] *= width
    b[:, 1::2] *= height
    b = b[0]
    b = np.array(b, dtype=np.float32).reshape(-1, 4)
    centre = (b[:, 2:] + b[:, :2]) / 2.0
    side = np.max(b[:, 2:] - b[:, :2], axis=-1)
    b = np.concatenate([centre - side / 2.0, centre + side / 2.0], axis=-1)
    b[:, ::2] = np.clip(b[:, ::2], 0.0, float(width) - 1)
    b[:, 1::2] = np.clip(b[:, 1::2], 0.0, float(height) - 1)
    b = np.array(b[0], dtype=np.float32).reshape(-1, 4)
    b[:, 0] -= 25
    b[:, 2] += 25
    b[:, 1] -= 25
    b[:, 3] += 25
    b[:, ::2] = np.clip(b[:, ::2], 0.0, float(width) - 1)
    b[:, 1::2] = np.clip(b[:, 1::2], 0.0, float(height) - 1)
    return tuple(int(v) for v in b[0].astype(np.int32))


def test_focus_region_matches_original_arithmetic_on_random_boxes():
    rng = random.Random(0)
    for _ in range(2000):
        width, height = rng.randint(2, 2000), rng.randint(2, 2000)
        x1, x2 = sorted(round(rng.random(), rng.choice([2, 3, 6])) for _ in range(2))
        y1, y2 = sorted(round(rng.random(), rng.choice([2, 3, 6])) for _ in range(2))
        if x1 == x2 or y1 == y2:
            continue
        box = (x1, y1, x2, y2)
        expected = _original_region(box, width, height)
        if expected[2] <= expected[0] or expected[3] <= expected[1]:
            continue
        assert focus_region(box, width, height) == expected, (box, width, height)


def test_focus_region_refuses_bad_boxes_and_empty_crops():
    with pytest.raises(BoxError) as info:
        focus_region((0.5, 0.2, 0.3, 0.6), 100, 100)
    assert info.value.reason == INVERTED
    with pytest.raises(BoxError) as info:
        focus_region((0.0, 0.0, 1.0, 1.0), 1, 1)  # clip bound is width - 1 = 0: nothing left
    assert info.value.reason == EMPTY_CROP
    with pytest.raises(BoxError) as info:
        focus_region((0.1, 0.2, 0.4, 0.5), 0, 10)
    assert info.value.reason == EMPTY_CROP


# -- the crop ---------------------------------------------------------------------------------------


def _gradient_image(width, height):
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = np.arange(width)[None, :] % 256
    pixels[..., 1] = np.arange(height)[:, None] % 256
    pixels[..., 2] = (np.arange(width)[None, :] + np.arange(height)[:, None]) % 256
    return Image.fromarray(pixels)


@pytest.mark.parametrize("box", [(0.1, 0.2, 0.4, 0.5), (0.9, 0.9, 1.0, 1.0), (0.0, 0.0, 1.0, 1.0)])
def test_crop_is_the_originals_numpy_slice(box):
    image = _gradient_image(200, 150)
    region = focus_region(box, image.width, image.height)
    x1, y1, x2, y2 = region
    got = crop(image, region)
    assert got.mode == "RGB"
    assert got.size == (x2 - x1, y2 - y1)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(image)[y1:y2, x1:x2])


def test_crop_exact_pixels_hand_computed():
    image = _gradient_image(640, 480)
    got = crop(image, focus_region((0.1, 0.2, 0.4, 0.5), 640, 480))  # (39, 47, 281, 289)
    assert got.size == (242, 242)
    assert got.getpixel((0, 0)) == (39, 47, (39 + 47) % 256)
    assert got.getpixel((241, 241)) == (280 % 256, 288 % 256, (280 + 288) % 256)  # pixel (280, 288)


def test_crop_never_includes_the_last_column_and_row():
    image = _gradient_image(100, 80)
    region = focus_region((0.0, 0.0, 1.0, 1.0), 100, 80)
    assert crop(image, region).size == (99, 79)  # the original's clip to size - 1, kept


def test_crop_rejects_a_region_outside_the_image():
    image = _gradient_image(10, 10)
    with pytest.raises(BoxError) as info:
        crop(image, (0, 0, 11, 5))
    assert info.value.reason == EMPTY_CROP
    with pytest.raises(BoxError):
        crop(image, (5, 5, 5, 8))
