"""Formats (SPEC 2.4, 2a): sniffing real files, and WebP, AVIF, HEIC converted before upload.

Every image here is a real file made with Pillow (HEIC with pillow-heif) when the test runs, and
goes through the running service (real pycurl, real HTTP) to the fake Imgur, which refuses WebP,
AVIF and HEIC with "File type invalid (1)" as Imgur does.
"""

import io
import struct
import threading
import time

import pillow_heif
import pytest
from PIL import AvifImagePlugin, Image, ImageChops, ImageCms, ImageSequence, WebPImagePlugin
from tornado import gen, web
from tornado.httpclient import AsyncHTTPClient

from imgurd import convert, download, sniff
from tests.fakes import JPEG, start_server

pillow_heif.register_heif_opener()  # lets the tests write HEIC files (imgurd reads them without it)


# --- real files, made here


def photo(width=96, height=64, alpha=False, seed=0):
    """A photograph-like picture: smooth gradients and noise, thousands of colours."""
    gradient = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 30 + seed)
    image = Image.merge("RGB", (gradient, noise, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    if alpha:  # opaque left half, transparent top right, half-transparent bottom right
        opacity = Image.new("L", (width, height), 255)
        opacity.paste(0, (width // 2, 0, width, height // 2))
        opacity.paste(128, (width // 2, height // 2, width, height))
        image.putalpha(opacity)
    return image


def frames(count=4, alpha=False):
    """Distinct frames (Pillow's GIF writer merges identical neighbours)."""
    return [photo(alpha=alpha, seed=i).rotate(90 * i, expand=False) for i in range(count)]


def encode(image, fmt, **options):
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def animation(fmt, alpha=False, **options):
    first, *rest = frames(alpha=alpha)
    return encode(first, fmt, save_all=True, append_images=rest, duration=[80, 120, 160, 200], **options)


def with_major_brand(data, brand):
    """The same file with another major brand in its ftyp box (as some encoders write AVIF)."""
    assert data[4:8] == b"ftyp"
    return data[:8] + brand + data[12:]


def with_ispe(data, width, height):
    """The same file declaring another size in its ``ispe`` box (image spatial extents)."""
    at = data.index(b"ispe")
    return data[:at + 8] + struct.pack(">II", width, height) + data[at + 16:]


def with_webp_canvas(data, width, height):
    """An extended (VP8X) WebP declaring another canvas size."""
    assert data[12:16] == b"VP8X"
    return data[:24] + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little") + data[30:]


# name: (bytes, what it must arrive as, frames)
def convertible():
    avif = encode(photo(), "AVIF")
    return {
        "lossy.webp": (encode(photo(), "WEBP", quality=80), "image/jpeg", 1),
        "lossless.webp": (encode(photo(), "WEBP", lossless=True), "image/png", 1),
        "alpha.webp": (encode(photo(alpha=True), "WEBP", quality=90), "image/png", 1),
        "few-colours.webp": (encode(Image.new("RGB", (40, 30), (20, 120, 220)), "WEBP"), "image/png", 1),
        "animated.webp": (animation("WEBP", loop=0), "image/gif", 4),
        "animated-alpha.webp": (animation("WEBP", alpha=True, loop=0), "image/gif", 4),
        "still.avif": (avif, "image/jpeg", 1),
        "mif1.avif": (with_major_brand(avif, b"mif1"), "image/jpeg", 1),
        "miaf.avif": (with_major_brand(avif, b"miaf"), "image/jpeg", 1),
        "alpha-avif.avif": (encode(photo(alpha=True), "AVIF"), "image/png", 1),
        "animated-avif.avif": (animation("AVIF"), "image/gif", 4),
        "still.heic": (encode(photo(), "HEIF"), "image/jpeg", 1),
        "alpha-heic.heic": (encode(photo(alpha=True), "HEIF"), "image/png", 1),
    }


# --- sniffing, against real files


def real_files():
    """(name, a function making the file, its type): made when its test runs, not at collection."""
    rgb = photo()
    return [
        ("jpeg", lambda: encode(rgb, "JPEG"), "image/jpeg"),
        ("progressive jpeg", lambda: encode(rgb, "JPEG", progressive=True), "image/jpeg"),
        ("png", lambda: encode(rgb, "PNG"), "image/png"),
        ("1x1 png", lambda: encode(Image.new("L", (1, 1)), "PNG"), "image/png"),
        ("apng", lambda: animation("PNG"), "image/png"),
        ("gif", lambda: encode(rgb.convert("P"), "GIF"), "image/gif"),
        ("1x1 gif", lambda: encode(Image.new("P", (1, 1)), "GIF"), "image/gif"),
        ("tiff little-endian", lambda: encode(rgb, "TIFF"), "image/tiff"),
        ("tiff big-endian", lambda: encode(Image.new("I;16B", (8, 8)), "TIFF"), "image/tiff"),
        ("bigtiff little-endian", lambda: encode(rgb, "TIFF", big_tiff=True), "image/tiff"),
        ("bigtiff big-endian", lambda: encode(Image.new("I;16B", (8, 8)), "TIFF", big_tiff=True), "image/tiff"),
        ("bmp", lambda: encode(rgb, "BMP"), "image/bmp"),
        ("webp lossy", lambda: encode(rgb, "WEBP"), "image/webp"),
        ("webp lossless", lambda: encode(rgb, "WEBP", lossless=True), "image/webp"),
        ("webp animated", lambda: animation("WEBP"), "image/webp"),
        ("avif", lambda: encode(rgb, "AVIF"), "image/avif"),
        ("avif sequence (avis)", lambda: animation("AVIF"), "image/avif"),
        ("avif, major brand mif1", lambda: with_major_brand(encode(rgb, "AVIF"), b"mif1"), "image/avif"),
        ("avif, major brand miaf", lambda: with_major_brand(encode(rgb, "AVIF"), b"miaf"), "image/avif"),
        ("heic", lambda: encode(rgb, "HEIF"), "image/heic"),
    ]


@pytest.mark.parametrize("name, make, mime", real_files(), ids=lambda v: v if isinstance(v, str) else "")
def test_sniff_recognises_real_files(name, make, mime):
    data = make()
    assert sniff.image_type(data) == mime
    if name != "bigtiff big-endian":  # Pillow 13 writes these but cannot read them back
        assert open_image(data).size  # Pillow agrees it is an image


@pytest.mark.parametrize("data, looks_like", [
    (encode(photo(), "JPEG")[:3], "content looks like a truncated or damaged image/jpeg, 3 bytes"),
    (encode(photo(), "JPEG")[:40], "content looks like a truncated or damaged image/jpeg, 40 bytes"),
    (b"\x89PNG\r\n\x1a\n", "content looks like a truncated or damaged image/png, 8 bytes"),
    (b"GIF89a\x01\x00", "content looks like a truncated or damaged image/gif, 8 bytes"),
    (encode(photo(), "TIFF", big_tiff=True)[:16], "content looks like a truncated or damaged image/tiff, 16 bytes"),
    (b"BMW is a car maker from Munich, Germany.\n", "content looks like text/plain"),
    (b"BM" + b" " * 60, "content looks like text/plain"),
    (with_major_brand(encode(photo(), "AVIF"), b"mp42")[:32] + b"\0" * 4, "content looks like video/mp4"),
])
def test_sniff_refuses_implausible_images(data, looks_like):
    assert sniff.image_type(data) is None
    assert sniff.describe(data) == looks_like


def test_sniff_tells_video_from_avif_by_brands():
    mp4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00\x00\x00\x08free"
    assert sniff.image_type(mp4) is None
    assert sniff.image_type(mp4.replace(b"iso2", b"avif")) == "image/avif"
    assert sniff.image_type(mp4.replace(b"iso2", b"heic")) == "image/heic"


# --- conversion through the running service


async def run(api, urls):
    report = await api.wait(await api.submit(urls), timeout=60)
    return report["images"]


def open_image(data):
    if sniff.image_type(data) == "image/avif":  # Image.open() looks at the major brand only: not miaf
        return AvifImagePlugin.AvifImageFile(io.BytesIO(data))
    return Image.open(io.BytesIO(data))


def frames_of(data):
    return [frame.convert("RGBA") for frame in ImageSequence.Iterator(open_image(data))]


def opaque_mask(image):
    """Where a picture shows (alpha at least half), as a 1-bit image."""
    return image.getchannel("A").point([0] * 128 + [255] * 128, "1")


@pytest.mark.gen_test(timeout=120)
async def test_refused_formats_arrive_as_png_jpeg_or_gif(start_service, origin, imgur):
    api = start_service()
    cases = convertible()
    urls = [origin.add("/img/" + name, data, "image/" + name.rsplit(".", 1)[1]) for name, (data, _, _) in cases.items()]
    images = await run(api, urls)
    assert [image["status"] for image in images] == ["complete"] * len(cases), images
    assert imgur.requests == len(imgur.uploads) == len(cases)  # nothing was refused, nothing sent twice
    by_name = {upload.filename.rsplit(".", 1)[0]: upload for upload in imgur.uploads}
    for name, (data, mime, count) in cases.items():
        upload = by_name[name.rsplit(".", 1)[0]]
        assert upload.content_type == mime, name
        assert upload.filename == name.rsplit(".", 1)[0] + "." + convert.EXTENSIONS[mime]
        assert sniff.image_type(upload.data) == mime, name
        sent = Image.open(io.BytesIO(upload.data))
        assert sent.format == {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}[mime]
        source, result = frames_of(data), frames_of(upload.data)
        assert sent.size == open_image(data).size and len(result) == len(source) == count, name
        for before, after in zip(source, result):  # transparency kept, pixel for pixel
            assert ImageChops.difference(opaque_mask(before), opaque_mask(after)).getbbox() is None, name
    animated = Image.open(io.BytesIO(by_name["animated"].data))
    assert [frame.info["duration"] for frame in ImageSequence.Iterator(animated)] == [80, 120, 160, 200]
    assert animated.info["loop"] == 0


@pytest.mark.gen_test(timeout=60)
async def test_orientation_applied_and_colour_profile_kept(start_service, origin, imgur):
    api = start_service()
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    urls = [origin.add("/turned." + ext, encode(photo(96, 64), fmt, exif=exif.tobytes(), icc_profile=profile))
            for fmt, ext in (("WEBP", "webp"), ("AVIF", "avif"), ("HEIF", "heic"))]
    images = await run(api, urls)
    assert all(image["status"] == "complete" for image in images), images
    for upload in imgur.uploads:
        sent = Image.open(io.BytesIO(upload.data))
        assert (sent.format, sent.size) == ("JPEG", (64, 96)), upload.filename
        assert sent.getexif().get(0x0112, 1) == 1
        assert sent.info.get("icc_profile") == profile


@pytest.mark.gen_test(timeout=60)
async def test_identical_bytes_are_converted_and_uploaded_once(start_service, origin, imgur):
    api = start_service()
    data = encode(photo(), "WEBP")
    images = await run(api, [origin.add("/same/a.webp", data), origin.add("/same/b.webp", data)])
    assert [image["status"] for image in images] == ["complete", "complete"], images
    assert len(imgur.uploads) == 1 and images[0]["link"] == images[1]["link"]


@pytest.mark.gen_test(timeout=60)
async def test_undecodable_image_fails_without_upload(start_service, origin, imgur):
    api = start_service()
    good = encode(photo(), "WEBP")
    broken = good[:30] + bytes(range(256)) * 4  # a WebP header, then noise
    avif = encode(photo(), "AVIF")
    broken_avif = avif[:len(avif) // 2]
    images = await run(api, [origin.add("/broken.webp", broken), origin.add("/half.avif", broken_avif)])
    assert images[0]["error"].startswith("could not convert image/webp: "), images
    assert images[1]["error"].startswith("could not convert image/avif: "), images
    assert imgur.requests == 0


@pytest.fixture
def decode_spy(monkeypatch):
    """Records every ``load()`` (the decode) of a WebP, AVIF or HEIC image in the service."""
    calls = []
    for cls in (WebPImagePlugin.WebPImageFile, AvifImagePlugin.AvifImageFile, pillow_heif.HeifImageFile):
        def spy(self, _load=cls.load, _name=cls.__name__):
            calls.append(_name)
            return _load(self)
        monkeypatch.setattr(cls, "load", spy)
    return calls


@pytest.mark.gen_test(timeout=60)
async def test_decompression_bombs_are_refused_from_their_header(start_service, origin, imgur, decode_spy):
    api = start_service()  # max_image_pixels 50000000
    webp = with_webp_canvas(animation("WEBP"), 16384, 16384)  # 4 KiB declaring 268 million pixels
    avif = with_ispe(encode(Image.new("RGB", (64, 64)), "AVIF"), 10000, 10000)
    heic = with_ispe(encode(Image.new("RGB", (64, 64)), "HEIF"), 12000, 9000)
    assert max(len(webp), len(avif), len(heic)) < 10_000
    images = await run(api, [origin.add("/bomb.webp", webp), origin.add("/bomb.avif", avif),
                             origin.add("/bomb.heic", heic)])
    assert [image["error"] for image in images] == [
        "could not convert image/webp: 16384x16384 pixels, over max_image_pixels (50000000)",
        "could not convert image/avif: 10000x10000 pixels, over max_image_pixels (50000000)",
        "could not convert image/heic: 12000x9000 pixels, over max_image_pixels (50000000)",
    ]
    assert decode_spy == [] and imgur.requests == 0


@pytest.mark.gen_test(timeout=60)
async def test_pixel_limit_counts_every_frame(start_service, origin, imgur):
    api = start_service(max_image_pixels=96 * 64 * 3)
    images = await run(api, [origin.add("/four.webp", animation("WEBP")),
                             origin.add("/one.webp", encode(photo(), "WEBP"))])
    assert images[0]["error"] == ("could not convert image/webp: 96x64 pixels x 4 frames, over max_image_pixels "
                                  "(18432) (a frame counts at least 65536)")
    assert images[1]["status"] == "complete", images
    assert imgur.requests == 1


@pytest.mark.gen_test(timeout=60)
async def test_an_animation_of_many_tiny_frames_is_refused_before_decoding(start_service, origin, imgur):
    """1x1 frames are next to nothing by pixels, but each costs its decoding and encoding: 100,000 of them
    (a 5 MB WebP) took 85 s of CPU and 680 MB. Each frame counts at least 256 x 256 pixels."""
    tiny = [Image.new("RGB", (1, 1), (255 * (i % 2), 0, 0)) for i in range(1000)]
    data = encode(tiny[0], "WEBP", save_all=True, append_images=tiny[1:], duration=10, lossless=True)
    assert len(data) < 100_000
    api = start_service()  # max_image_pixels 50000000: 1000 x 65536 is over it
    started = time.monotonic()
    images = await run(api, [origin.add("/tiny.webp", data)])
    assert images[0]["error"] == ("could not convert image/webp: 1x1 pixels x 1000 frames, over max_image_pixels "
                                  "(50000000) (a frame counts at least 65536)")
    assert time.monotonic() - started < 5 and imgur.requests == 0


@pytest.mark.gen_test(timeout=60)
async def test_result_over_max_image_bytes_fails(start_service, origin, imgur):
    data = encode(photo(400, 300, alpha=True), "WEBP", quality=50)  # a PNG of it is several times larger
    api = start_service(max_image_bytes=len(data) + 1000)
    images = await run(api, [origin.add("/grows.webp", data)])
    assert images[0]["error"] == "could not convert image/webp: the PNG would be over max_image_bytes (%d)" % (
        len(data) + 1000)
    assert imgur.requests == 0


@pytest.mark.gen_test(timeout=60)
async def test_without_conversion_refused_formats_fail_before_upload(start_service, origin, imgur):
    api = start_service(convert_formats=False)
    cases = convertible()
    urls = [origin.add("/raw/" + name, data) for name, (data, _, _) in cases.items()]
    urls.append(origin.add("/raw/fine.jpg", JPEG))
    images = await run(api, urls)
    expected = ["not an image Imgur accepts (image/%s)" % name.rsplit(".", 1)[1] for name in cases]
    assert [image["error"] for image in images] == expected + [None], images
    assert imgur.requests == 1 and imgur.uploads[0].data == JPEG


@pytest.mark.gen_test(timeout=60)
async def test_fake_imgur_refuses_what_imgur_refuses(imgur):
    """The fake answers unconverted WebP, AVIF and HEIC as Imgur does (so the tests above mean something)."""
    http = AsyncHTTPClient(force_instance=True)
    for name, (data, _, _) in convertible().items():
        body, content_type = _multipart(data, name)
        response = await http.fetch(imgur.url + "/3/image", method="POST", body=body, raise_error=False,
                                    headers={"Authorization": "Client-ID " + imgur.client_id,
                                             "Content-Type": content_type})
        assert response.code == 400, name
        assert b'"code": 1003' in response.body and b"File type invalid (1)" in response.body
    assert not imgur.uploads
    http.close()


def _multipart(data, name):
    boundary = "b0undary"
    body = ("--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"%s\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n" % (boundary, name)).encode() + data + (
        "\r\n--%s--\r\n" % boundary).encode()
    return body, "multipart/form-data; boundary=" + boundary


# --- the Accept header


def quality(accept, mime):
    """The q-value an Accept header gives ``mime`` (most specific range wins)."""
    best = (-1, 0.0)
    for item in accept.split(","):
        range_, *params = [part.strip() for part in item.split(";")]
        q = next((float(p[2:]) for p in params if p.startswith("q=")), 1.0)
        kind, _, sub = range_.partition("/")
        if range_ == mime:
            rank = 2
        elif sub == "*" and mime.startswith(kind + "/"):
            rank = 1
        else:
            rank = 0 if range_ == "*/*" else -1
        if rank > best[0]:
            best = (rank, q)
    return best[1]


def test_accept_header_prefers_what_imgur_takes():
    for taken in ("image/jpeg", "image/png", "image/gif", "image/apng"):
        assert quality(download.ACCEPT, taken) == 1.0
    for taken in ("image/tiff", "image/bmp"):
        assert 0.5 < quality(download.ACCEPT, taken) < 1.0
    for refused in ("image/webp", "image/avif", "image/heic", "image/jxl"):
        assert 0 < quality(download.ACCEPT, refused) <= 0.5
    assert 0 < quality(download.ACCEPT, "text/html") < 0.5


class _Negotiating(web.RequestHandler):
    """An origin like an image CDN: WebP to clients that say they take it, else the JPEG."""

    def initialize(self, webp, jpeg, seen):
        self.webp, self.jpeg, self.seen = webp, jpeg, seen

    def get(self):
        accept = self.request.headers.get("Accept", "")
        self.seen.append(accept)
        browser_like = quality(accept, "image/webp") >= quality(accept, "image/jpeg")
        self.set_header("Content-Type", "image/webp" if browser_like else "image/jpeg")
        self.set_header("Vary", "Accept")
        self.finish(self.webp if browser_like else self.jpeg)


@pytest.mark.gen_test(timeout=60)
async def test_negotiating_origin_serves_a_format_imgur_takes(start_service, imgur):
    jpeg = encode(photo(), "JPEG")
    seen = []
    app = web.Application([(r"/.*", _Negotiating, {"webp": encode(photo(), "WEBP"), "jpeg": jpeg, "seen": seen})])
    server, port = start_server(app)
    try:
        api = start_service()
        images = await run(api, ["http://127.0.0.1:%d/photo" % port])
    finally:
        server.stop()
    assert images[0]["status"] == "complete", images
    assert seen == [download.ACCEPT]
    assert imgur.uploads[0].data == jpeg and imgur.uploads[0].filename == "photo"  # as it was: not converted


# --- the event loop stays free


@pytest.mark.gen_test(timeout=120)
async def test_healthz_answers_while_large_images_convert(start_service, origin, imgur, monkeypatch):
    """6 conversions of 3-megapixel WebPs: /healthz keeps answering while they run in the pool.

    If a conversion ran on the event loop, no request could be answered while it runs, so no
    answer could ever arrive while a conversion is in progress. Timing is only checked loosely.
    """
    running = [0, 0]  # now, most at once
    lock = threading.Lock()
    real = convert.convert

    def counted(*args):
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        try:
            return real(*args)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(convert, "convert", counted)
    api = start_service(reuse_identical_uploads=False)
    data = encode(photo(2000, 1500), "WEBP", quality=85)
    job = await api.submit([origin.add("/large/%d.webp" % i, data) for i in range(6)])  # 3 x WORKERS
    answers_while_converting = 0
    slowest = 0.0
    clock = api.service.store.clock
    while True:
        started = clock()
        code, body, _ = await api.call("GET", "/healthz")
        slowest = max(slowest, clock() - started)
        assert (code, body) == (200, {"status": "ok"})
        if running[0]:
            answers_while_converting += 1
        report = await api.job(job)
        if report["status"] == "complete":
            break
        await gen.sleep(0.01)
    assert [image["status"] for image in report["images"]] == ["complete"] * 6, report
    assert answers_while_converting >= 3
    assert running[1] <= convert.WORKERS
    assert slowest < 5.0  # loose: a conversion takes ~0.2 s of CPU; the loop never waits for one


def test_converted_file_name_follows_the_format():
    assert convert.renamed("cat.webp", "image/png") == "cat.png"
    assert convert.renamed("photo.JPG", "image/jpeg") == "photo.jpg"  # an origin that lied about it
    assert convert.renamed("image", "image/gif") == "image.gif"
    assert convert.renamed("v1.2", "image/jpeg") == "v1.2.jpg"
