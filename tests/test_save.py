"""Tests for webui.outputs.save (atomic numbered saves, metadata, base64)."""

from __future__ import annotations

import base64
import io
import os
import threading
from datetime import datetime

import numpy as np
import pytest
from PIL import Image

from webui.outputs.infotext import build_infotext, parse_infotext
from webui.outputs.save import (
    decode_image_base64,
    encode_png_base64,
    next_image_number,
    read_infotext,
    save_image,
)

NOW = datetime(2024, 5, 17, 13, 45, 0)
DAY = "2024-05-17"
INFOTEXT = build_infotext(
    "a cat, masterpiece\nsecond line",
    "blurry",
    {"Steps": 20, "Sampler": "DPM++ 2M", "CFG scale": 7, "Seed": 1234, "Size": "64x48", "Version": "v1.9.2"},
)
UNICODE_INFOTEXT = build_infotext("日本語の猫 🙂, ünïcödé", "ぼやけ", {"Steps": 5, "Seed": 1, "Note": "é, ü"})


def make_image(mode: str = "RGB", size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(0)
    channels = len(mode)
    array = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(array.squeeze(-1) if channels == 1 else array, mode)


def test_first_file_name_and_counter(tmp_path):
    image = make_image()
    first = save_image(image, tmp_path, 1234, INFOTEXT, now=NOW)
    second = save_image(image, tmp_path, 99, INFOTEXT, now=NOW)
    assert first == tmp_path / DAY / "00000-1234.png"
    assert second == tmp_path / DAY / "00001-99.png"
    assert first.is_file() and second.is_file()


def test_accepts_str_outdir_and_uses_today_by_default(tmp_path):
    before = datetime.now().strftime("%Y-%m-%d")
    path = save_image(make_image(), str(tmp_path), 7, "")
    after = datetime.now().strftime("%Y-%m-%d")
    assert path.parent.parent == tmp_path
    assert path.parent.name in {before, after}
    assert path.name == "00000-7.png"


def test_existing_files_bump_counter(tmp_path):
    folder = tmp_path / DAY
    folder.mkdir()
    (folder / "00041-5.png").write_bytes(b"x")
    (folder / "7-other.txt").write_bytes(b"x")
    (folder / "notes.txt").write_bytes(b"x")
    (folder / "123abc.png").write_bytes(b"x")  # digits not followed by '-': ignored
    (folder / ".hidden.tmp").write_bytes(b"x")
    assert next_image_number(folder) == 42
    path = save_image(make_image(), tmp_path, 5, INFOTEXT, now=NOW)
    assert path.name == "00042-5.png"
    assert (folder / "00041-5.png").read_bytes() == b"x"


def test_counter_beyond_five_digits(tmp_path):
    folder = tmp_path / DAY
    folder.mkdir()
    (folder / "123456-1.png").write_bytes(b"x")
    assert save_image(make_image(), tmp_path, 1, "", now=NOW).name == "123457-1.png"


def test_next_image_number_missing_folder(tmp_path):
    assert next_image_number(tmp_path / "nope") == 0


def test_png_infotext_readable_with_pillow(tmp_path):
    path = save_image(make_image(), tmp_path, 1234, INFOTEXT, now=NOW)
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.info["parameters"] == INFOTEXT
        assert read_infotext(im) == INFOTEXT
        assert np.array_equal(np.asarray(im), np.asarray(make_image()))
    parsed = parse_infotext(INFOTEXT)
    assert parsed["Prompt"] == "a cat, masterpiece\nsecond line"
    assert parsed["Size-1"] == "64"


def test_png_non_ascii_infotext(tmp_path):
    path = save_image(make_image(), tmp_path, 1, UNICODE_INFOTEXT, now=NOW)
    with Image.open(path) as im:
        assert im.info["parameters"] == UNICODE_INFOTEXT
        assert read_infotext(im) == UNICODE_INFOTEXT


def test_png_without_infotext(tmp_path):
    path = save_image(make_image(), tmp_path, 1, "", now=NOW)
    with Image.open(path) as im:
        assert read_infotext(im) is None


@pytest.mark.parametrize("extension", ["jpg", "jpeg", "webp", "JPG"])
@pytest.mark.parametrize("infotext", [INFOTEXT, UNICODE_INFOTEXT])
def test_exif_formats_round_trip(tmp_path, extension, infotext):
    path = save_image(make_image("RGBA"), tmp_path, 3, infotext, now=NOW, extension=extension)
    assert path.name == f"00000-3.{extension.lower()}"
    with Image.open(path) as im:
        assert im.format == ("WEBP" if extension == "webp" else "JPEG")
        assert read_infotext(im) == infotext
        raw = im.getexif().get_ifd(0x8769)[0x9286]
        assert raw.startswith(b"UNICODE\x00")
        assert raw[8:].decode("utf-16-be") == infotext


def test_read_infotext_user_comment_variants():
    def with_comment(raw: bytes) -> Image.Image:
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9286] = raw
        buffer = io.BytesIO()
        make_image().save(buffer, "JPEG", exif=exif)
        buffer.seek(0)
        return Image.open(buffer)

    assert read_infotext(with_comment(b"UNICODE\x00" + "Steps: 5".encode("utf-16-le"))) == "Steps: 5"
    assert read_infotext(with_comment(b"UNICODE\x00" + "Steps: 5".encode("utf-16-be"))) == "Steps: 5"
    assert read_infotext(with_comment(b"ASCII\x00\x00\x00Steps: 5")) == "Steps: 5"
    buffer = io.BytesIO()
    make_image().save(buffer, "JPEG")
    buffer.seek(0)
    assert read_infotext(Image.open(buffer)) is None


def test_unsupported_extension(tmp_path):
    with pytest.raises(ValueError, match="unsupported"):
        save_image(make_image(), tmp_path, 1, "", now=NOW, extension="bmp")


def test_failed_write_leaves_nothing(tmp_path):
    class Broken:
        """Not an image: encoding fails part way."""

        mode = "RGB"

        def copy(self):
            return self

        def save(self, fp, *args, **kwargs):
            fp.write(b"\x89PNG partial")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_image(Broken(), tmp_path, 1, INFOTEXT, now=NOW)  # type: ignore[arg-type]
    assert os.listdir(tmp_path / DAY) == []


def test_concurrent_saves_are_distinct(tmp_path):
    image = make_image(size=(32, 32))  # one shared Image object: metadata must not leak across threads
    results: list = []
    errors: list = []
    barrier = threading.Barrier(8)

    def worker(thread_id: int) -> None:
        try:
            barrier.wait()
            for i in range(5):
                results.append(save_image(image, tmp_path, thread_id * 100 + i, f"t{thread_id} i{i}", now=NOW))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(results) == 40 and len(set(results)) == 40
    names = sorted(os.listdir(tmp_path / DAY))
    assert len(names) == 40
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]
    assert sorted(int(n.split("-")[0]) for n in names) == list(range(40))
    for path in results:
        seed = int(path.stem.split("-")[1])
        with Image.open(path) as im:
            assert read_infotext(im) == f"t{seed // 100} i{seed % 100}"


def test_base64_round_trip():
    image = make_image()
    data = encode_png_base64(image, UNICODE_INFOTEXT)
    raw = base64.b64decode(data)
    assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    for payload in (data, "data:image/png;base64," + data, "  " + data + "\n"):
        decoded = decode_image_base64(payload)
        assert decoded.size == image.size
        assert np.array_equal(np.asarray(decoded), np.asarray(image))
        assert read_infotext(decoded) == UNICODE_INFOTEXT


def test_base64_missing_padding_and_jpeg_data_url():
    buffer = io.BytesIO()
    make_image().save(buffer, "JPEG")
    data = base64.b64encode(buffer.getvalue()).decode().rstrip("=")
    decoded = decode_image_base64("data:image/jpeg;base64," + data)
    assert decoded.format == "JPEG" and decoded.size == (64, 48)


@pytest.mark.parametrize(
    "payload",
    [
        "not base64 !!!",
        "data:image/png;base64,@@@@",
        "abcde",  # impossible length
        "",
        base64.b64encode(b"definitely not an image").decode(),
        "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\ntruncated").decode(),
    ],
)
def test_bad_base64_raises_value_error(payload):
    with pytest.raises(ValueError, match="^could not decode image: "):
        decode_image_base64(payload)


def test_encode_without_infotext():
    decoded = decode_image_base64(encode_png_base64(make_image(), None))
    assert read_infotext(decoded) is None
