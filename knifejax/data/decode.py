"""Decode an image file to RGB uint8 the way the study baseline did with OpenCV, without OpenCV.

The baseline read images with ``cv2.imread(path, cv2.IMREAD_COLOR)`` and flipped BGR to RGB.
``load_rgb`` gives the same pixels for every input the study used:

- EXIF orientation is applied (OpenCV does so by default; here ``ImageOps.exif_transpose``).
- Alpha is dropped and the raw colour values kept, not composited on a background (libpng's
  ``png_set_strip_alpha``); palette images go through their palette, transparency ignored.
- Grayscale and 1-bit images are replicated to three channels (1-bit: 0 -> 0, 1 -> 255).
- 16-bit samples become ``value >> 8`` (libpng's ``png_set_strip_16`` keeps the high byte, i.e.
  divides by 256 truncating; it does not round).  Pillow already keeps the high byte for 16-bit
  RGB, RGBA and gray+alpha PNGs; 16-bit grayscale (Pillow modes ``I;16*``, and ``I`` in which
  Pillow < 11 opened them) is shifted here, as Pillow's own conversion would clip it to 255.
- CMYK JPEGs use OpenCV's formula ``R = (255 - K) - ((C * (255 - K)) >> 8)`` (likewise G from M,
  B from Y) on the Adobe-convention values Pillow decodes, which is exact; Pillow's
  ``convert("RGB")`` divides by 255 and rounds, and so gives up to 2 less per channel.

Unlike OpenCV, which fills a truncated JPEG with grey and only warns, a truncated file is an
error: Pillow raises when pixel data is missing, and a JPEG must hold an end-of-image marker
after its first scan and a PNG its ``IEND`` chunk (libpng makes ``cv2.imread`` fail without it).
These marker checks also hold when ``ImageFile.LOAD_TRUNCATED_IMAGES`` has been set elsewhere.

Files from outside are read with bounds: only regular files are opened (``open_regular``; a FIFO or
``/dev/zero`` named by a CSV is a bad file, not a hang), and an image is refused from its header, before
decoding, when it has more than ``max_pixels`` pixels (default ``DEFAULT_MAX_PIXELS``, 64 megapixels: more
than any phone's default mode, about 0.6 GB to decode; a 420 KB PNG can declare 12000 x 12000).  The file
itself may hold at most 8 bytes per allowed pixel (16-bit RGBA, uncompressed).  Pillow's global
``Image.MAX_IMAGE_PIXELS`` is left as the host set it: it still warns above its value and stops images above
twice it (about 179 megapixels by default), whatever ``max_pixels`` allows.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from knifejax.data.errors import DataError
from knifejax.data.regular_file import NotRegularFileError, open_regular

DEFAULT_MAX_PIXELS = 64_000_000
_MAX_BYTES_PER_PIXEL = 8

_JPEG_START = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"
_JPEG_START_OF_SCAN = 0xDA
# Markers that stand alone, without a length field: TEM and RST0-RST7.
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SIXTEEN_BIT_GRAY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# What Pillow raises for a file it cannot decode, besides OSError (which covers truncation).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)
_FIX_TRUNCATED = "copy or download it again, or leave it out of the dataset"


def load_rgb(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as a writable uint8 array (H, W, 3) in RGB order, as the baseline did.

    Raises ``DataError`` naming the file when it is missing, not a regular file, unreadable, not an
    image, truncated, larger than ``max_pixels`` pixels, or has 32-bit float pixels (not supported).
    """
    path = Path(path)
    data = _read_bytes(path, max_pixels * _MAX_BYTES_PER_PIXEL)
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_pixels(path, image.size, max_pixels)
            image.load()
            _check_complete(path, data)
            return _to_rgb(path, ImageOps.exif_transpose(image))
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(
            f"{path}: not a readable image (unknown format, or a damaged file); replace or remove it"
        ) from None
    except _DECODE_ERRORS as error:
        if "truncated" in str(error).lower():
            raise DataError(f"{path}: the file is truncated (Pillow: {error}); {_FIX_TRUNCATED}") from error
        raise DataError(f"{path}: cannot decode it as an image ({error}); replace or remove it") from error


def _check_pixels(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise DataError(
            f"{path}: {width} x {height} pixels is more than the limit of {max_pixels}; shrink the image, or "
            "raise the limit (--max-image-pixels, TrainConfig.max_image_pixels) if the machine has the memory"
        )


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        with open_regular(path) as file:
            data = file.read(max_bytes + 1)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path, or leave the entry out") from None
    except NotRegularFileError as error:
        raise DataError(f"{path}: {error.strerror}; only image files can be read, leave it out") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror or error})") from error
    if len(data) > max_bytes:
        raise DataError(
            f"{path}: the file is larger than {max_bytes} bytes, more than any image within the pixel limit "
            "needs; leave it out, or raise the limit (--max-image-pixels)"
        )
    return data


def _check_complete(path: Path, data: bytes) -> None:
    """Raise unless a JPEG or PNG file ends properly; Pillow decodes both without their last bytes."""
    if data.startswith(_JPEG_START) and not _jpeg_has_end(data):
        raise DataError(f"{path}: the file is truncated (no JPEG end-of-image marker); {_FIX_TRUNCATED}")
    if data.startswith(_PNG_SIGNATURE) and not _png_has_end(data):
        raise DataError(f"{path}: the file is truncated (no PNG IEND chunk); {_FIX_TRUNCATED}")


def _jpeg_has_end(data: bytes) -> bool:
    """Whether an end-of-image marker follows the first start-of-scan.

    Segments are skipped by their length up to the first scan, so an EXIF thumbnail (a whole
    JPEG inside APP1) cannot supply the marker; entropy-coded data cannot hold ``FF D9``, and
    bytes after the marker (MPO images, phone makers' trailers) are not looked at.
    """
    position = len(_JPEG_START)
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return False
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
        elif marker == _JPEG_START_OF_SCAN:
            return data.find(_JPEG_END, position) != -1
        elif marker in _JPEG_STANDALONE_MARKERS:
            position += 2
        else:
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return False


def _png_has_end(data: bytes) -> bool:
    """Whether the chunks, walked by their lengths, reach a complete ``IEND`` chunk."""
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        position += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            return position <= len(data)
    return False


def _to_rgb(path: Path, image: Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT_GRAY_MODES:
        gray = (np.clip(np.asarray(image), 0, 0xFFFF) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "CMYK":
        return _cmyk_to_rgb(np.asarray(image))
    if image.mode == "F":
        raise DataError(f"{path}: 32-bit float pixels are not supported; save the image as 8 or 16-bit")
    return np.array(image.convert("RGB"))


def _cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """OpenCV's ``icvCvt_CMYK2BGR_8u_C4C3R`` on Pillow's (non-inverted) CMYK values."""
    cmyk = cmyk.astype(np.int32)
    not_black = 255 - cmyk[..., 3:]
    return (not_black - ((cmyk[..., :3] * not_black) >> 8)).astype(np.uint8)
