"""Loading every Pillow mode, the error cases, the pixel guard, and saving."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageFile

from convscope.data.images import (
    DEFAULT_MAX_PIXELS,
    from_pil,
    load_image,
    save_image,
    save_png,
    to_pil,
)
from convscope.errors import UserInputError


def _px(x: torch.Tensor, r: int, c: int) -> list[float]:
    return [round(float(v), 4) for v in x[:, r, c]]


def _check(x: torch.Tensor, h: int, w: int) -> None:
    assert x.shape == (3, h, w)
    assert x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


# --- modes -------------------------------------------------------------------------------------


def test_rgb_exact(tmp_path: Path) -> None:
    a = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) * 4
    Image.fromarray(a).save(tmp_path / "rgb.png")
    x = load_image(tmp_path / "rgb.png")
    _check(x, 4, 5)
    assert torch.equal(x, torch.from_numpy(a.transpose(2, 0, 1).astype(np.float32) / 255))


def test_gray_l(tmp_path: Path) -> None:
    a = np.array([[0, 128], [255, 7]], dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "l.png")
    x = load_image(str(tmp_path / "l.png"))
    _check(x, 2, 2)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert _px(x, 0, 1) == [round(128 / 255, 4)] * 3


def test_la_over_white(tmp_path: Path) -> None:
    im = Image.new("LA", (3, 1))
    im.putdata([(0, 0), (0, 255), (0, 128)])
    im.save(tmp_path / "la.png")
    x = load_image(tmp_path / "la.png")
    assert _px(x, 0, 0) == [1.0] * 3
    assert _px(x, 0, 1) == [0.0] * 3
    assert _px(x, 0, 2) == [round(1 - 128 / 255, 4)] * 3


def test_sixteen_bit_png(tmp_path: Path) -> None:
    a = np.array([[0, 65535, 32768, 257]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "16.png")
    with Image.open(tmp_path / "16.png") as im:
        assert im.mode in ("I;16", "I")
    x = load_image(tmp_path / "16.png")
    _check(x, 1, 4)
    expect = torch.tensor([0.0, 1.0, 32768 / 65535, 257 / 65535])
    assert torch.allclose(x[0, 0], expect, atol=1e-7)


def test_mode_i_32bit(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 65535]], dtype=np.int32)).save(tmp_path / "i.tif")
    assert torch.allclose(load_image(tmp_path / "i.tif")[0, 0], torch.tensor([0.0, 1.0]))
    Image.fromarray(np.array([[-10, 0, 10]], dtype=np.int32)).save(tmp_path / "neg.tif")
    x = load_image(tmp_path / "neg.tif")
    assert torch.allclose(x[0, 0], torch.tensor([0.0, 0.5, 1.0]))


def test_mode_f(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0.0, 0.25, 1.0]], dtype=np.float32)).save(tmp_path / "f.tif")
    assert torch.allclose(load_image(tmp_path / "f.tif")[1, 0], torch.tensor([0.0, 0.25, 1.0]))
    Image.fromarray(np.array([[-2.0, 0.0, 2.0]], dtype=np.float32)).save(tmp_path / "g.tif")
    assert torch.allclose(load_image(tmp_path / "g.tif")[2, 0], torch.tensor([0.0, 0.5, 1.0]))


def test_mode_1(tmp_path: Path) -> None:
    im = Image.new("1", (2, 1))
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "bw.png")
    x = load_image(tmp_path / "bw.png")
    assert _px(x, 0, 0) == [0.0] * 3 and _px(x, 0, 1) == [1.0] * 3


def test_palette(tmp_path: Path) -> None:
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putdata([0, 1])
    im.save(tmp_path / "p.png")
    x = load_image(tmp_path / "p.png")
    assert _px(x, 0, 0) == [1.0, 0.0, 0.0] and _px(x, 0, 1) == [0.0, 0.0, 1.0]


def test_palette_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 0] + [0] * 762)
    im.putdata([0, 1])
    im.info["transparency"] = 1
    im.save(tmp_path / "pt.png", transparency=1)
    x = load_image(tmp_path / "pt.png")
    assert _px(x, 0, 0) == [1.0, 0.0, 0.0]
    assert _px(x, 0, 1) == [1.0, 1.0, 1.0]  # transparent black → white


def test_rgba_over_white(tmp_path: Path) -> None:
    im = Image.new("RGBA", (2, 1))
    im.putdata([(255, 0, 0, 255), (0, 0, 0, 0)])
    im.save(tmp_path / "rgba.png")
    x = load_image(tmp_path / "rgba.png")
    assert _px(x, 0, 0) == [1.0, 0.0, 0.0] and _px(x, 0, 1) == [1.0, 1.0, 1.0]


def test_cmyk(tmp_path: Path) -> None:
    im = Image.new("CMYK", (2, 1))
    im.putdata([(0, 0, 0, 0), (255, 0, 0, 0)])
    im.save(tmp_path / "cmyk.tif")
    x = load_image(tmp_path / "cmyk.tif")
    assert _px(x, 0, 0) == [1.0, 1.0, 1.0]
    assert _px(x, 0, 1) == [0.0, 1.0, 1.0]  # cyan


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    x = load_image(tmp_path / "cmyk.jpg")
    _check(x, 8, 8)
    assert float(x.min()) > 0.9  # white


def test_ycbcr() -> None:
    rgb = Image.new("RGB", (4, 4), (200, 30, 90))
    x = from_pil(rgb.convert("YCbCr"))
    assert torch.allclose(x[:, 0, 0], torch.tensor([200, 30, 90]) / 255, atol=0.02)


def test_ycbcr_file(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4), (200, 30, 90)).convert("YCbCr").save(tmp_path / "y.jpg")
    x = load_image(tmp_path / "y.jpg")
    assert torch.allclose(x[:, 2, 2], torch.tensor([200, 30, 90]) / 255, atol=0.05)


def test_exif_orientation(tmp_path: Path) -> None:
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:, :20] = (255, 0, 0)  # stored: left half red
    a[:, 20:] = (0, 0, 255)  # right half blue
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    x = load_image(tmp_path / "rot.jpg")
    _check(x, 40, 20)  # H and W swapped
    assert x[0, 5, 10] > 0.8 and x[2, 5, 10] < 0.2  # top is red
    assert x[2, 35, 10] > 0.8 and x[0, 35, 10] < 0.2  # bottom is blue


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=50)
    x = load_image(tmp_path / "a.gif")
    assert _px(x, 1, 1) == [1.0, 0.0, 0.0]


# --- errors ------------------------------------------------------------------------------------


def _one_sentence(msg: str) -> None:
    assert msg.endswith(".") and "\n" not in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist") as ei:
        load_image(tmp_path / "nope.png")
    assert "nope.png" in str(ei.value)
    _one_sentence(str(ei.value))


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="is a folder"):
        load_image(tmp_path)


def test_zero_bytes(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UserInputError, match="empty"):
        load_image(tmp_path / "empty.png")


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "text.png").write_text("hello, I am not a PNG\n")
    with pytest.raises(UserInputError, match="not an image") as ei:
        load_image(tmp_path / "text.png")
    assert "text.png" in str(ei.value)
    _one_sentence(str(ei.value))


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_truncated(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / f"full.{fmt}")
    data = (tmp_path / f"full.{fmt}").read_bytes()
    (tmp_path / f"cut.{fmt}").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserInputError, match="truncated or corrupt") as ei:
        load_image(tmp_path / f"cut.{fmt}")
    assert f"cut.{fmt}" in str(ei.value)
    _one_sentence(str(ei.value))


def _huge_png(path: Path, w: int, h: int) -> None:
    """A real 1-bit PNG of w×h black pixels, written without holding it in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + b"\x00" * ((w + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_huge_image_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "huge.png"
    _huge_png(p, 20000, 20000)
    assert p.stat().st_size < 200_000
    before = Image.MAX_IMAGE_PIXELS

    def no_decode(*_a: object, **_k: object) -> None:
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decode)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(UserInputError) as ei:
        load_image(p)
    monkeypatch.undo()
    msg = str(ei.value)
    assert "400,000,000" in msg and f"{DEFAULT_MAX_PIXELS:,}" in msg and "--max-pixels N" in msg
    assert "huge.png" in msg
    _one_sentence(msg)
    assert before == Image.MAX_IMAGE_PIXELS


def test_max_pixels_raise_or_disable(tmp_path: Path) -> None:
    p = tmp_path / "big.png"
    _huge_png(p, 1200, 1000)
    with pytest.raises(UserInputError, match="1,200,000"):
        load_image(p, max_pixels=1_000_000)
    _check(load_image(p, max_pixels=1_200_000), 1000, 1200)
    x = load_image(p, max_pixels=None)
    _check(x, 1000, 1200)
    assert float(x.max()) == 0.0


def test_pillow_guard_does_not_govern(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # would make Pillow raise a bomb error
    Image.new("RGB", (20, 20)).save(tmp_path / "s.png")
    _check(load_image(tmp_path / "s.png"), 20, 20)
    _check(load_image(tmp_path / "s.png", max_pixels=None), 20, 20)
    assert Image.MAX_IMAGE_PIXELS == 10


def test_bad_max_pixels(tmp_path: Path) -> None:
    Image.new("RGB", (2, 2)).save(tmp_path / "s.png")
    with pytest.raises(UserInputError, match="max_pixels"):
        load_image(tmp_path / "s.png", max_pixels=0)


# --- to_pil / from_pil -------------------------------------------------------------------------


def test_to_pil_shapes() -> None:
    assert to_pil(torch.zeros(3, 4, 5)).mode == "RGB"
    assert to_pil(torch.zeros(3, 4, 5)).size == (5, 4)
    assert to_pil(torch.zeros(1, 4, 5)).mode == "L"
    assert to_pil(torch.zeros(4, 5)).mode == "L"
    for bad in (torch.zeros(2, 4, 5), torch.zeros(1, 3, 4, 5), torch.zeros(3, 0, 5)):
        with pytest.raises(UserInputError):
            to_pil(bad)
    with pytest.raises(UserInputError, match="dtype"):
        to_pil(torch.zeros(3, 2, 2, dtype=torch.int64))


def test_to_pil_clamps_rounds_and_does_not_mutate() -> None:
    x = torch.tensor([[[-1.0, 0.5, 2.0, float("nan")]]]).repeat(3, 1, 1)
    keep = x.clone()
    a = np.asarray(to_pil(x))
    assert a[0].tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255], [0, 0, 0]]
    assert torch.equal(x.isnan(), keep.isnan())
    assert torch.equal(torch.nan_to_num(x), torch.nan_to_num(keep))


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9), st.just(3))))
def test_pil_round_trip_is_exact(a: np.ndarray) -> None:
    im = Image.fromarray(a)
    x = from_pil(im)
    assert x.shape == (3, *a.shape[:2])
    assert np.array_equal(np.asarray(to_pil(x)), a)


@settings(max_examples=25, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9))))
def test_gray_round_trip_is_exact(a: np.ndarray) -> None:
    x = torch.from_numpy(a.astype(np.float32) / 255)  # (H, W)
    assert np.array_equal(np.asarray(to_pil(x)), a)


# --- saving ------------------------------------------------------------------------------------


def test_save_png_round_trip(tmp_path: Path) -> None:
    x = torch.rand(3, 6, 7)
    keep = x.clone()
    out = save_png(x, tmp_path / "o.png")
    assert out == tmp_path / "o.png"
    assert torch.equal(x, keep)
    y = load_image(out)
    assert torch.allclose(y, x, atol=0.5 / 255 + 1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]


def test_save_png_inputs(tmp_path: Path) -> None:
    hwc = np.zeros((4, 5, 3), dtype=np.float64)
    hwc[..., 0] = 1.0
    x = load_image(save_png(hwc, tmp_path / "hwc.png"))
    assert _px(x, 0, 0) == [1.0, 0.0, 0.0]
    chw = np.zeros((3, 4, 5), dtype=np.uint8)
    chw[2] = 255
    x = load_image(save_png(chw, tmp_path / "chw.png"))
    assert x.shape == (3, 4, 5) and _px(x, 0, 0) == [0.0, 0.0, 1.0]
    im = Image.new("RGBA", (2, 2), (0, 255, 0, 255))
    assert _px(load_image(save_png(im, tmp_path / "pil.png")), 1, 1) == [0.0, 1.0, 0.0]
    save_png(np.ones((3, 3), dtype=bool), tmp_path / "bool.png")
    with pytest.raises(UserInputError, match="dtype"):
        save_png(np.zeros((3, 3), dtype=np.int32), tmp_path / "bad.png")
    with pytest.raises(UserInputError, match="shape"):
        save_png(np.zeros((4, 4, 2), dtype=np.uint8), tmp_path / "bad.png")
    with pytest.raises(UserInputError):
        save_png("not an image", tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_save_image_formats(tmp_path: Path) -> None:
    im = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent → white in JPEG
    jpg = save_image(im, tmp_path / "o.JPG")
    with Image.open(jpg) as back:
        assert back.format == "JPEG"
    assert float(load_image(jpg).min()) > 0.95
    webp = save_image(torch.rand(3, 8, 8), tmp_path / "o.webp", quality=80)
    with Image.open(webp) as back:
        assert back.format == "WEBP"
    png = save_image(torch.rand(1, 8, 8), tmp_path / "o.png")
    with Image.open(png) as back:
        assert back.format == "PNG"
    with pytest.raises(UserInputError, match="suffix"):
        save_image(im, tmp_path / "o.bmpx")
    with pytest.raises(UserInputError, match="does not exist"):
        save_image(im, tmp_path / "no" / "o.png")
    with pytest.raises(UserInputError, match="quality"):
        save_image(im, tmp_path / "q.jpg", quality=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.JPG", "o.png", "o.webp"]


def test_png_bytes_are_the_bytes_save_png_writes(tmp_path: Path) -> None:
    from convscope.data.images import png_bytes

    img = torch.rand(3, 9, 13, generator=torch.Generator().manual_seed(1))
    text = {"b": "2", "a": "1 · ünï"}
    path = save_png(img, tmp_path / "x.png", text=text)
    assert png_bytes(img, text=text) == path.read_bytes()
    assert png_bytes(img) == save_png(img, tmp_path / "y.png").read_bytes()
