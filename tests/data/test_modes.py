"""High-bit-depth and unusual Pillow modes: 16-bit, 32-bit integer and float images are scaled to
[0, 1] (not clipped at 255), and the conversions that change an image are named."""
import numpy as np
import pytest
import torch
from PIL import Image

from apl.data import ImageList, read_image, to_tensor
from apl.data.modes import conversion_note, convert_image, unit_array

RAMP16 = (np.arange(12 * 8).reshape(12, 8) * 600).astype(np.uint16)  # 0 .. 57000 of 65535


def test_16_bit_png_is_scaled_by_65535(tmp_path):
    Image.fromarray(RAMP16).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode == "I;16"
    for mode, channels in (("L", 1), ("RGB", 3)):
        x = to_tensor(read_image(tmp_path / "a.png", mode))
        assert x.shape == (channels, 12, 8)
        expected = torch.from_numpy(RAMP16 / 65535).float().expand(channels, 12, 8)
        torch.testing.assert_close(x, expected, atol=0.5 / 255 + 1e-6, rtol=0)  # read with 8 bits
    assert float((x == 1.0).float().mean()) == 0.0  # Pillow's own convert: 99% of the pixels at 1.0


def test_16_bit_images_in_an_image_list(tmp_path):
    (tmp_path / "c").mkdir()
    Image.fromarray(RAMP16).save(tmp_path / "c" / "a.png")
    Image.fromarray(RAMP16).save(tmp_path / "c" / "b.tif")
    ds = ImageList.from_folders(tmp_path)
    for i in range(2):
        x, _ = ds[i]
        assert abs(float(x.max()) - 57000 / 65535) < 1 / 255 and float(x.min()) == 0.0


def test_to_tensor_keeps_the_full_precision_of_16_bit_images():
    img = Image.fromarray(RAMP16)
    torch.testing.assert_close(to_tensor(img), torch.from_numpy(RAMP16 / 65535).float()[None])
    big_endian = Image.frombytes("I;16B", (8, 12), RAMP16.astype(">u2").tobytes())
    torch.testing.assert_close(to_tensor(big_endian), to_tensor(img))


def test_32_bit_integer_images():
    as_16_bit = Image.fromarray(RAMP16.astype(np.int32))
    assert as_16_bit.mode == "I"
    torch.testing.assert_close(to_tensor(as_16_bit), torch.from_numpy(RAMP16 / 65535).float()[None])
    wide = np.array([[-5, 0], [100_000, 200_000]], dtype=np.int32)  # beyond 16 bits: by its own maximum
    np.testing.assert_allclose(unit_array(Image.fromarray(wide)), [[0, 0], [0.5, 1]])


def test_float_images_are_taken_as_they_are_clamped():
    arr = np.array([[-0.5, 0.25], [np.nan, 1.5]], dtype=np.float32)
    x = to_tensor(Image.fromarray(arr))
    torch.testing.assert_close(x, torch.tensor([[[0.0, 0.25], [0.0, 1.0]]]))
    assert np.asarray(convert_image(Image.fromarray(arr), "L")).tolist() == [[0, 64], [0, 255]]


def test_8_bit_images_are_unchanged():
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    img = Image.fromarray(arr)
    assert np.array_equal(np.asarray(convert_image(img, "RGB")), np.asarray(img.convert("RGB")))
    torch.testing.assert_close(to_tensor(img), torch.from_numpy(arr / 255).float()[None])


def test_conversion_notes():
    rgb = Image.new("RGB", (2, 2))
    assert conversion_note(rgb, "RGB") is None and conversion_note(rgb, "L") is None
    assert conversion_note(Image.new("L", (2, 2)), "RGB") is None
    assert conversion_note(Image.new("1", (2, 2)), "RGB") is None
    assert conversion_note(Image.new("P", (2, 2)), "RGB") is None
    assert conversion_note(Image.fromarray(RAMP16), "RGB") == \
        "16-bit greyscale (mode I;16): scaled to [0, 1] by 65535 and read with 8 bits"
    assert conversion_note(Image.fromarray(RAMP16.astype(np.int32)), "L") == \
        "32-bit integer greyscale (mode I) holding 16-bit values: scaled by 65535 and read with 8 bits"
    wide = Image.fromarray(np.array([[-5, 200_000]], dtype=np.int32))
    assert conversion_note(wide, "L") == \
        "32-bit integer greyscale (mode I), values -5..200000: scaled by its own maximum, negative values read as 0"
    flt = Image.fromarray(np.array([[-0.5, 1.5]], dtype=np.float32))
    assert conversion_note(flt, "L") == "32-bit float greyscale (mode F): read with 8 bits, values -0.5..1.5 clamped to [0, 1]"
    assert conversion_note(Image.fromarray(np.array([[0.5]], np.float32)), "L") == "32-bit float greyscale (mode F): read with 8 bits"
    assert conversion_note(Image.new("RGBA", (2, 2)), "RGB") == \
        "transparency (mode RGBA) dropped: transparent pixels show their stored colour"
    palette = Image.new("P", (2, 2))
    palette.info["transparency"] = 0
    assert conversion_note(palette, "RGB") == "transparency (mode P) dropped: transparent pixels show their stored colour"
    assert conversion_note(Image.new("CMYK", (2, 2)), "RGB") == \
        "CMYK converted to RGB by Pillow's plain formula (no colour profile): colours are approximate"
    assert conversion_note(Image.new("HSV", (2, 2)), "RGB") == "mode HSV converted to RGB"


def test_mode_errors():
    with pytest.raises(ValueError, match=r"unit_array: expected one of the modes I;16, .*F, got 'L'"):
        unit_array(Image.new("L", (2, 2)))
    with pytest.raises(ValueError, match=r"to_tensor: expected an 8-bit image \(mode L or RGB\) or one of the modes I;16, .*got mode '1'"):
        to_tensor(Image.new("1", (2, 2)))


def test_a_mode_pillow_cannot_convert_names_the_file(tmp_path, monkeypatch):
    import apl.data.image_list as image_list
    from apl.data import CorruptImageError

    Image.new("RGB", (2, 2)).save(tmp_path / "odd.png")

    def refuse(image, mode):
        raise ValueError(f"conversion from {image.mode} to {mode} not supported")

    monkeypatch.setattr(image_list, "convert_image", refuse)
    with pytest.raises(CorruptImageError, match=r"corrupt or unreadable image: .*odd\.png \(list\.txt, line 3\): conversion from RGB"):
        read_image(tmp_path / "odd.png", "L", source="list.txt, line 3")
