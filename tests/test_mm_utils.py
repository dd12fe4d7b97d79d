"""expand2square / process_images against CLIP's processor; load_image's errors; model names."""

import base64
import io
import struct
import types
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from dualfocus.mm_utils import (
    ImageLoadError,
    expand2square,
    get_model_name_from_path,
    load_image,
    load_image_from_base64,
    process_images,
)

MEAN_RGB = (122, 116, 104)  # int(255 * CLIP's image_mean)


def _image(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def clip_processor():
    from transformers import CLIPImageProcessor

    # LLaVA-1.5 uses size={"shortest_edge": 336}, crop_size=336; 28 keeps the test fast.
    return CLIPImageProcessor(size={"shortest_edge": 28}, crop_size=28)


def test_expand2square_landscape_centres_on_background():
    img = _image(6, 3)
    out = np.asarray(expand2square(img, MEAN_RGB))
    assert out.shape == (6, 6, 3)
    # (6 - 3) // 2 = 1 row of background above, 2 below.
    np.testing.assert_array_equal(out[1:4], np.asarray(img))
    for row in (0, 4, 5):
        assert (out[row] == MEAN_RGB).all()


def test_expand2square_portrait_centres_on_background():
    img = _image(3, 7)
    out = np.asarray(expand2square(img, MEAN_RGB))
    assert out.shape == (7, 7, 3)
    np.testing.assert_array_equal(out[:, 2:5], np.asarray(img))
    for col in (0, 1, 5, 6):
        assert (out[:, col] == MEAN_RGB).all()


def test_expand2square_square_is_returned_as_is():
    img = _image(4, 4)
    assert expand2square(img, MEAN_RGB) is img


def test_process_images_pad_equals_clip_on_padded_input(clip_processor):
    images = [_image(40, 20, 1), _image(15, 33, 2)]
    cfg = types.SimpleNamespace(image_aspect_ratio="pad")
    out = process_images(images, clip_processor, cfg)
    assert out.shape == (2, 3, 28, 28) and out.dtype == torch.float32
    for i, img in enumerate(images):
        padded = expand2square(img, MEAN_RGB)
        expected = clip_processor(padded, return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(out[i], expected, rtol=0, atol=0)
    # Padding really happened: the unpadded image gives other pixels (CLIP centre-crops instead).
    unpadded = clip_processor(images[0], return_tensors="pt")["pixel_values"][0]
    assert not torch.equal(out[0], unpadded)


@pytest.mark.parametrize("cfg", [types.SimpleNamespace(image_aspect_ratio="square"), object()])
def test_process_images_otherwise_uses_the_processor_as_is(clip_processor, cfg):
    images = [_image(40, 20, 3), _image(20, 40, 4)]
    out = process_images(images, clip_processor, cfg)
    torch.testing.assert_close(
        out, clip_processor(images, return_tensors="pt")["pixel_values"], rtol=0, atol=0
    )


def _png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_load_image_path_and_base64_convert_to_rgb(tmp_path):
    rgba = Image.new("RGBA", (5, 4), (10, 20, 30, 40))
    path = tmp_path / "a.png"
    path.write_bytes(_png_bytes(rgba))
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (5, 4) and img.getpixel((0, 0)) == (10, 20, 30)
    gray = Image.new("L", (2, 3), 77)
    b64 = base64.b64encode(_png_bytes(gray)).decode()
    img = load_image(b64, from_base64=True, record_id=7)
    assert img.mode == "RGB" and img.getpixel((1, 2)) == (77, 77, 77)
    assert load_image_from_base64(b64).size == (2, 3)


RAMP = np.linspace(0.0, 1.0, 256).reshape(16, 16)  # mean 0.5: mean 127.5 once in 8 bits


def _palette(mode, transparency=None):
    im = Image.new(mode, (4, 4), 1 if mode == "P" else (1, 200))
    im.putpalette([0, 0, 0, 10, 20, 30])
    if transparency is not None:
        im.info["transparency"] = transparency
    return im


def _half_set():
    im = Image.new("1", (4, 4), 0)
    im.paste(1, (0, 0, 4, 2))
    return im


# mode -> (image in that mode, the 8-bit mean load_image must give). 8-bit modes as LLaVA's
# convert("RGB") (alpha dropped, not flattened); deeper ones scaled to 0..255, never clipped.
MODE_CASES = {
    "1": (_half_set, 127.5),
    "L": (lambda: Image.new("L", (4, 4), 77), 77),
    "LA": (lambda: Image.new("LA", (4, 4), (100, 0)), 100),
    "P": (lambda: _palette("P"), 20),
    "P+transparency": (lambda: _palette("P", transparency=1), 20),
    "PA": (lambda: _palette("PA"), 20),
    "RGB": (lambda: Image.new("RGB", (4, 4), (200, 100, 50)), 350 / 3),
    "RGBA": (lambda: Image.new("RGBA", (4, 4), (200, 100, 50, 0)), 350 / 3),
    "CMYK": (lambda: Image.new("CMYK", (4, 4), (50, 100, 150, 0)), (205 + 155 + 105) / 3),
    "YCbCr": (lambda: Image.new("YCbCr", (4, 4), (128, 128, 128)), 128),
    "I;16": (lambda: Image.fromarray((RAMP * 65535).round().astype(np.uint16)), 127.5),
    "I;16B": (lambda: Image.fromarray((RAMP * 65535).round().astype(">u2")), 127.5),
    "I (16-bit values)": (lambda: Image.fromarray((RAMP * 65535).round().astype(np.int32)), 127.5),
    "I (32-bit values)": (lambda: Image.fromarray((RAMP * 3e9 - 1e9).astype(np.int32)), 127.5),
    "F (0..1)": (lambda: Image.fromarray(RAMP.astype(np.float32)), 127.5),
    "F (0..255)": (lambda: Image.fromarray((RAMP * 255).astype(np.float32)), 127.5),
    "F (any range)": (lambda: Image.fromarray((RAMP * 1000 - 300).astype(np.float32)), 127.5),
}


@pytest.mark.parametrize("case", MODE_CASES)
def test_load_image_converts_every_mode_to_rgb_by_its_range(tmp_path, case):
    make, mean = MODE_CASES[case]
    image = make()
    path = tmp_path / "image.tiff"  # TIFF keeps every one of these modes
    image.save(path)
    with Image.open(path) as back:
        assert back.mode == image.mode
    rgb = load_image(path)
    assert rgb.mode == "RGB" and rgb.size == image.size
    assert np.asarray(rgb, dtype=np.float64).mean() == pytest.approx(mean, abs=0.5)


def test_a_16_bit_png_is_not_read_as_white(tmp_path):
    """The reported case: 16-bit greyscale PNG, mean 119 in 8 bits, was read as 254."""
    values = np.full((8, 8), 119 * 257, dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert np.asarray(load_image(path)).mean() == 119


def test_load_image_missing_file(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageLoadError, match=r"nope\.jpg: file not found"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_load_image_truncated(tmp_path, fmt):
    buf = io.BytesIO()
    _image(64, 64).save(buf, format=fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match=rf"cut\.{fmt.lower()}: cannot read image .*truncated") as info:
        load_image(path)
    assert isinstance(info.value, ValueError)


def test_load_image_garbage_bytes(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageLoadError, match=r"garbage\.png: not a readable image"):
        load_image(path)


def test_load_image_directory_is_unreadable(tmp_path):
    with pytest.raises(ImageLoadError, match=str(tmp_path).replace("\\", "\\\\")):
        load_image(tmp_path)


def test_load_image_bad_base64():
    with pytest.raises(ImageLoadError, match=r"base64 image of record 'q42': invalid base64"):
        load_image("not*base64!!", from_base64=True, record_id="q42")
    garbage = base64.b64encode(b"no image here").decode()
    with pytest.raises(ImageLoadError, match=r"base64 image of record 3: not a readable image"):
        load_image(garbage, from_base64=True, record_id=3)


def test_load_image_keeps_decompression_bomb_guard(tmp_path):
    data = bytearray(_png_bytes(Image.new("RGB", (1, 1))))
    # Rewrite the IHDR chunk to claim 20000 x 20000 pixels (> 2 * Image.MAX_IMAGE_PIXELS).
    ihdr = bytearray(data[12:29])
    ihdr[4:12] = struct.pack(">II", 20000, 20000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path = tmp_path / "bomb.png"
    path.write_bytes(bytes(data))
    max_pixels = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageLoadError, match=r"bomb\.png: refused as a possible decompression bomb"):
        load_image(path)
    assert Image.MAX_IMAGE_PIXELS == max_pixels


@pytest.mark.parametrize(
    "path,name",
    [
        ("liuhaotian/llava-v1.5-7b", "llava-v1.5-7b"),
        ("/ckpts/dualfocus-7b/", "dualfocus-7b"),
        ("/runs/dualfocus/checkpoint-500", "dualfocus_checkpoint-500"),
    ],
)
def test_get_model_name_from_path(path, name):
    assert get_model_name_from_path(path) == name
