"""Conversion of the image formats Imgur refuses (SPEC 2a): WebP, AVIF and HEIC become PNG, JPEG or GIF.

Browsers show WebP, AVIF and HEIC, so origins serve them, but Imgur's API answers "File type
invalid". They are decoded with Pillow (HEIC with pillow-heif) and encoded again:

- an animation (WebP, AVIF) becomes a GIF with its frames, durations and loop count;
- a still image with transparency, or with few colours, becomes a PNG;
- a lossless WebP becomes a PNG, or a JPEG when the PNG would pass max_image_bytes;
- any other still image (a photograph) becomes a JPEG, quality 92.

Still images get their EXIF orientation applied; ICC colour profiles are kept. A HEIC holding
several images (a burst, a collection) goes as its primary image.

Why a thread pool: decoding and encoding take from milliseconds to seconds of CPU per image, and
must never run on the event loop. Pillow, libwebp, libheif and zlib release the GIL for most of
their work, so a conversion in the pool leaves the loop free to serve requests and run transfers
(Pillow keeps it while libavif decodes AV1: about 100 ms for a 12-megapixel AVIF).

Decompression bombs: the canvas size is read from the header (WebP's own, AVIF's and HEIC's
``ispe`` as parsed by libavif and libheif, which decode nothing when they parse) and checked
against max_image_pixels before anything is decoded; an animation counts all its frames. So a
conversion holds at most about 16 bytes per pixel of max_image_pixels (WebP: libwebp's two
canvases, the decoded frame, Pillow's image), plus a few copies of the downloaded bytes and the
result (at most max_image_bytes); bench/convert.py measures it, docs/formats.md says it.
"""

import io
import logging
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Tuple, Union

import pillow_heif
from PIL import AvifImagePlugin, Image, ImageOps, WebPImagePlugin
from tornado.ioloop import IOLoop

from . import sniff
from .errors import TransferError

log = logging.getLogger("imgurd.convert")

MIN_FRAME_PIXELS = 256 * 256  # what a frame of an animation counts against max_image_pixels, at least

WORKERS = 2  # conversions running at once; more wait their turn in the pool's queue
JPEG_QUALITY = 92
FEW_COLOURS = 256  # a still image with at most this many colours becomes a PNG
GIF_ALPHA_THRESHOLD = 128  # GIF transparency is all or nothing: alpha below this is transparent

EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif"}
_IMAGE_EXTENSIONS = frozenset((
    "jpg", "jpeg", "jpe", "jfif", "png", "apng", "gif", "webp", "avif", "avifs", "heic", "heics", "heif", "heifs",
    "hif", "tif", "tiff", "bmp",
))

Bytes = Union[bytes, bytearray, memoryview]


class Converter:
    """Prepares downloaded images for Imgur; owns the conversion thread pool (made on first use)."""

    def __init__(self, config, workers: int = WORKERS) -> None:
        self.enabled = config.convert_formats
        self.max_pixels = config.max_image_pixels
        self.max_bytes = config.max_image_bytes
        self.workers = workers
        self._pool: Optional[ThreadPoolExecutor] = None

    async def prepare(self, data: Bytes, mime: str, name: str) -> Tuple[Bytes, str, str]:
        """(data, mime, file name) to upload: as they are when Imgur takes ``mime``, else converted,
        or TransferError (nothing is to be uploaded)."""
        if mime in sniff.IMGUR_TAKES:
            return data, mime, name
        if not self.enabled:
            raise TransferError("not an image Imgur accepts (%s)" % mime, "not_image")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="imgurd-convert")
        converted, new_mime = await IOLoop.current().run_in_executor(
            self._pool, convert, data, mime, self.max_pixels, self.max_bytes)
        return converted, new_mime, renamed(name, new_mime)

    def close(self) -> None:
        """Drop queued conversions; one running finishes in its thread (it cannot be interrupted)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def renamed(name: str, mime: str) -> str:
    """``name`` with the extension of ``mime``: an image extension is replaced, else one is added."""
    stem, dot, extension = name.rpartition(".")
    if dot and stem and extension.lower() in _IMAGE_EXTENSIONS:
        name = stem
    return "%s.%s" % (name, EXTENSIONS[mime])


def convert(data: Bytes, mime: str, max_pixels: int, max_bytes: int) -> Tuple[bytes, str]:
    """Decode ``data`` (of type ``mime``) and encode it as PNG, JPEG or GIF: (bytes, new MIME type).

    Runs in a worker thread. Every failure is a TransferError naming ``mime`` and why.
    """
    try:
        image = _open(data, mime, max_pixels)
        if _frames(image, mime) > 1:
            try:
                return _encode_gif(image, mime, max_bytes), "image/gif"
            finally:
                image.close()
        image = _decoded(image)  # the last reference to the image file goes: its decoder's buffers too
        return _encode_still(image, mime, max_bytes, _lossless_webp(data) if mime == "image/webp" else False)
    except TransferError:
        raise
    except MemoryError:
        raise TransferError("could not convert %s: out of memory" % mime, "convert") from None
    except Exception as error:  # decoders raise OSError, SyntaxError, ValueError, EOFError, RuntimeError, ...
        log.debug("conversion of %s failed", mime, exc_info=True)
        raise TransferError("could not convert %s: %s" % (mime, _why(error)), "convert") from None


def _why(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _open(data: Bytes, mime: str, max_pixels: int) -> Image.Image:
    """The image, opened from its header only, once its size passed the pixel check."""
    if mime == "image/webp":
        size = webp_canvas(data)  # libwebp allocates the whole canvas when it opens the file: check first
        if size is None:
            raise TransferError("could not convert image/webp: no canvas size in its header", "convert")
        _check_pixels(mime, size, 1, max_pixels)
        image: Image.Image = WebPImagePlugin.WebPImageFile(io.BytesIO(bytes(data)))
    elif mime == "image/avif":
        image = AvifImagePlugin.AvifImageFile(io.BytesIO(bytes(data)))
    else:  # image/heic, image/heif
        image = pillow_heif.HeifImageFile(io.BytesIO(bytes(data)))
    try:
        _check_pixels(mime, image.size, _frames(image, mime), max_pixels)
    except TransferError:
        image.close()
        raise
    return image


def _frames(image: Image.Image, mime: str) -> int:
    """Frames to convert: all of an animation; HEIC's other top-level images are not frames of one."""
    if mime in ("image/heic", "image/heif"):
        return 1
    return max(1, int(getattr(image, "n_frames", 1)))


def _check_pixels(mime: str, size: Tuple[int, int], frames: int, max_pixels: int) -> None:
    """Each frame of an animation counts at least MIN_FRAME_PIXELS: decoding, palette and GIF encoding
    cost per frame whatever its size, and 100,000 frames of 1x1 took 85 s of CPU and 680 MB."""
    width, height = size
    if max(width * height, MIN_FRAME_PIXELS if frames > 1 else 0) * frames > max_pixels:
        shape = "%dx%d pixels" % (width, height) + (" x %d frames" % frames if frames > 1 else "")
        counted = " (a frame counts at least %d)" % MIN_FRAME_PIXELS if width * height < MIN_FRAME_PIXELS else ""
        raise TransferError("could not convert %s: %s, over max_image_pixels (%d)%s"
                            % (mime, shape, max_pixels, counted if frames > 1 else ""), "too_large")


def webp_canvas(data: Bytes) -> Optional[Tuple[int, int]]:
    """Width and height from a WebP header (VP8X canvas, or the VP8 or VP8L bitstream), or None."""
    head = bytes(data[:30])
    chunk = head[12:16]
    if len(head) < 30:
        return None
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and head[20] == 0x2F:
        (bits,) = struct.unpack("<I", head[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _lossless_webp(data: Bytes) -> bool:
    """Whether a WebP's image is coded lossless (VP8L): then a PNG keeps every pixel."""
    offset, end = 12, min(len(data), 1 << 20)
    while offset + 8 <= end:  # chunks: VP8X, ICCP, ANIM, ALPH come before the bitstream's
        fourcc = bytes(data[offset:offset + 4])
        if fourcc in (b"VP8L", b"VP8 "):
            return fourcc == b"VP8L"
        (length,) = struct.unpack("<I", bytes(data[offset + 4:offset + 8]))
        offset += 8 + length + (length & 1)
    return False


def _decoded(image: Image.Image) -> Image.Image:
    """The pixels of a still image, in an image of their own; ``image`` is closed.

    After decoding, an image file still holds its decoder and the decoded bytes it copied its
    pixels from (libwebp keeps two canvases): two to three times the pixels again. The new image
    shares the pixels (no copy) and holds nothing else.
    """
    try:
        image.load()
        return image._new(image.im)  # the documented way (copy()) would copy the pixels once more
    finally:
        image.close()


def _encode_still(image: Image.Image, mime: str, max_bytes: int, lossless: bool) -> Tuple[bytes, str]:
    icc = image.info.get("icc_profile")
    try:
        ImageOps.exif_transpose(image, in_place=True)  # a new canvas only when it turns the image
        if image.mode not in ("RGB", "RGBA", "L", "LA"):
            image = _replace(image, image.convert("RGBA" if "A" in image.getbands() else "RGB"))
        if image.mode in ("RGBA", "LA"):
            if image.getextrema()[-1][0] < 255:  # some pixel is not opaque
                return _fit(mime, max_bytes, image, [("PNG", {"icc_profile": icc})])
            image = _replace(image, image.convert(image.mode[0] if image.mode == "LA" else "RGB"))
        png = ("PNG", {"icc_profile": icc})
        jpeg = ("JPEG", {"icc_profile": icc, "quality": JPEG_QUALITY})
        if image.getcolors(FEW_COLOURS) is not None:
            return _fit(mime, max_bytes, image, [png])
        return _fit(mime, max_bytes, image, [png, jpeg] if lossless else [jpeg])
    finally:
        image.close()


def _replace(old: Image.Image, new: Image.Image) -> Image.Image:
    """``new``, with ``old`` closed at once (when they differ): at most two canvases at a time."""
    if new is not old:
        old.close()
    return new


def _fit(mime: str, max_bytes: int, image: Image.Image, choices: List[Tuple[str, Dict[str, Any]]]
         ) -> Tuple[bytes, str]:
    """``image`` in the first of ``choices`` (format, options) whose encoding fits in max_image_bytes."""
    for fmt, options in choices:
        encoded = _save(image, fmt, max_bytes, {k: v for k, v in options.items() if v is not None})
        if encoded is not None:
            return encoded, "image/" + fmt.lower()
    raise TransferError("could not convert %s: the %s would be over max_image_bytes (%d)"
                        % (mime, " or ".join(fmt for fmt, _ in choices), max_bytes), "too_large")


def _encode_gif(image: Image.Image, mime: str, max_bytes: int) -> bytes:
    """An animation as a GIF: each composited frame in a palette of its own, durations, loop count.

    GIF transparency is all or nothing, so when a frame has transparent pixels every frame is drawn
    on a cleared canvas (disposal 2) and pixels under GIF_ALPHA_THRESHOLD become transparent.
    """
    frames = []
    durations = []
    transparent = False
    for index in range(_frames(image, mime)):
        image.seek(index)
        image.load()
        durations.append(int(image.info.get("duration") or 0))
        frame, has_alpha = _palette_frame(image)
        transparent = transparent or has_alpha
        frames.append(frame)
    options: Dict[str, Any] = {"save_all": True, "append_images": frames[1:], "duration": durations,
                               "disposal": 2 if transparent else 1, "optimize": False}
    if transparent:
        options["transparency"] = 255
    loop = image.info.get("loop", 0)  # WebP: times to play, 0 forever; GIF's NETSCAPE loop: times to repeat
    if loop != 1:
        options["loop"] = max(0, loop - 1) if loop else 0
    encoded = _save(frames[0], "GIF", max_bytes, options)
    if encoded is None:
        raise TransferError("could not convert %s: the GIF would be over max_image_bytes (%d)" % (mime, max_bytes),
                            "too_large")
    return encoded


def _palette_frame(image: Image.Image) -> Tuple[Image.Image, bool]:
    """One frame as a palette image of at most 255 colours; index 255 marks its transparent pixels."""
    frame = image.convert("RGB").quantize(255, method=Image.Quantize.FASTOCTREE)  # median cut: 50x slower
    if image.mode not in ("RGBA", "LA", "PA") or image.getextrema()[-1][0] >= GIF_ALPHA_THRESHOLD:
        return frame, False
    palette = frame.getpalette() or []
    frame.putpalette(palette + [0] * (768 - len(palette)))
    opacity = image.getchannel("A")
    frame.paste(255, mask=opacity.point([255] * GIF_ALPHA_THRESHOLD + [0] * (256 - GIF_ALPHA_THRESHOLD), "1"))
    opacity.close()
    frame.info["transparency"] = 255
    return frame, True


def _save(image: Image.Image, fmt: str, max_bytes: int, options: Dict[str, Any]) -> Optional[bytes]:
    """``image`` encoded as ``fmt``, or None once the encoding passes ``max_bytes`` (it stops there)."""
    out = _CappedBuffer(max_bytes)
    try:
        image.save(out, fmt, **options)
    except _Full:
        return None
    return out.getvalue()


class _Full(Exception):
    pass


class _CappedBuffer(io.BytesIO):
    """An in-memory file that refuses to grow past ``cap`` bytes, so an oversized result stops the
    encoder early instead of being made whole and thrown away."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def write(self, chunk) -> int:  # type: ignore[override]
        if self.tell() + len(chunk) > self.cap:
            raise _Full()
        return super().write(chunk)
