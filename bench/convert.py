"""What converting WebP, AVIF and HEIC costs (imgurd/convert.py): CPU, memory, event-loop lag.

    .venv/bin/python -m bench.convert [--quick]

Two to three minutes on a 2-core machine (--quick: under one). For each kind of image it prints the CPU time of one
conversion per megapixel (all threads of the process: libavif and libheif decode with several),
the wall time, and the peak memory the conversion added (VmHWM, reset just before it, in a fresh
process per case), per pixel. Then 16 conversions at once through imgurd's Converter (its thread
pool) while a timer on the event loop measures how late it fires: the loop's lag.
Images are made here with Pillow: gradients and noise, so they do not compress to nothing.
"""

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import pillow_heif
from PIL import Image

from imgurd import sniff
from imgurd.convert import Converter, convert

pillow_heif.register_heif_opener()  # to write HEIC inputs

LIMITS = {"max_pixels": 200_000_000, "max_bytes": 200 * 1024 * 1024}


def photo(width: int, height: int, alpha: bool = False, seed: int = 0) -> Image.Image:
    gradient = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 24 + seed)
    image = Image.merge("RGB", (gradient, noise, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    if alpha:
        opacity = Image.new("L", (width, height), 255)
        opacity.paste(0, (width // 2, 0, width, height // 2))
        image.putalpha(opacity)
    return image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def cases(quick: bool) -> List[Tuple[str, int, bytes]]:
    """(label, pixels converted, file)."""
    made = []
    sizes = [(1000, 1000), (2000, 2000)] if quick else [(1000, 1000), (2000, 2000), (4000, 3000)]
    for width, height in sizes:
        made.append(("WebP lossy %dx%d -> JPEG" % (width, height), width * height,
                     encode(photo(width, height), "WEBP", quality=85)))
    made.append(("WebP with alpha 2000x2000 -> PNG", 4_000_000, encode(photo(2000, 2000, True), "WEBP", quality=85)))
    made.append(("WebP lossless 2000x2000 -> PNG", 4_000_000, encode(photo(2000, 2000), "WEBP", lossless=True)))
    made.append(("AVIF 2000x2000 -> JPEG", 4_000_000, encode(photo(2000, 2000), "AVIF", speed=8)))
    made.append(("HEIC 2000x2000 -> JPEG", 4_000_000, encode(photo(2000, 2000), "HEIF", quality=80)))
    frames = [photo(480, 270, seed=i) for i in range(10 if quick else 40)]
    made.append(("animated WebP 480x270 x %d frames -> GIF" % len(frames), 480 * 270 * len(frames),
                 encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=40, quality=80)))
    return made


def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def measure_one(path: str) -> None:
    """In a fresh process: convert the file once to warm up, reset the peak RSS, convert it again."""
    with open(path, "rb") as handle:
        data = handle.read()
    mime = sniff.image_type(data)
    convert(data, mime, LIMITS["max_pixels"], LIMITS["max_bytes"])
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current RSS
    base = _status("VmRSS")
    cpu, wall = time.process_time(), time.perf_counter()
    result, new_mime = convert(data, mime, LIMITS["max_pixels"], LIMITS["max_bytes"])
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print("%f %f %d %d %s" % (cpu, wall, _status("VmHWM") - base, len(result), new_mime))


def lag_while_converting(data: bytes, mime: str, count: int) -> Dict[str, float]:
    """``count`` conversions through the Converter at once; how late a 5 ms timer on the loop fires."""
    import asyncio

    class Config:
        convert_formats = True
        max_image_pixels = LIMITS["max_pixels"]
        max_image_bytes = LIMITS["max_bytes"]

    async def run() -> Dict[str, float]:
        converter = Converter(Config())
        lags: List[float] = []
        done = False

        async def tick() -> None:
            while not done:
                before = time.perf_counter()
                await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - before - 0.005)

        ticker = asyncio.ensure_future(tick())
        started = time.perf_counter()
        await asyncio.gather(*[converter.prepare(data, mime, "x") for _ in range(count)])
        wall = time.perf_counter() - started
        done = True
        await ticker
        converter.close()
        lags.sort()
        return {"wall": wall, "p50": statistics.median(lags), "p99": lags[int(len(lags) * 0.99)], "max": lags[-1],
                "ticks": len(lags)}

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller images, a smoke test")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one file in this process
    args = parser.parse_args()
    if args.one:
        measure_one(args.one)
        return 0
    print("making the images...", file=sys.stderr)
    made = cases(args.quick)
    print("| image | file | result | CPU ms per MP | wall ms | peak memory added, bytes per pixel |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for label, pixels, data in made:
            path = os.path.join(folder, "input")
            with open(path, "wb") as handle:
                handle.write(data)
            out = subprocess.run([sys.executable, "-m", "bench.convert", "--one", path], check=True,
                                 capture_output=True, text=True).stdout.split()
            cpu, wall, peak, size, mime = float(out[0]), float(out[1]), int(out[2]), int(out[3]), out[4]
            print("| %s | %d KB | %s, %d KB | %.0f | %.0f | %.1f |" % (
                label, len(data) // 1000, mime, size // 1000, cpu * 1000 / (pixels / 1e6), wall * 1000,
                peak / pixels))
    side = 1000 if args.quick else 2000
    print("\n| 16 conversions at once (thread pool of 2) | wall s | event-loop lag p50 ms | p99 ms | max ms |")
    print("| --- | --- | --- | --- | --- |")
    for fmt, options in (("WEBP", {"quality": 85}), ("AVIF", {"speed": 8}), ("HEIF", {"quality": 80})):
        data = encode(photo(side, side), fmt, **options)
        lag = lag_while_converting(data, sniff.image_type(data) or "", 16)
        print("| %s %dx%d | %.2f | %.1f | %.1f | %.1f |" % (
            fmt, side, side, lag["wall"], lag["p50"] * 1000, lag["p99"] * 1000, lag["max"] * 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
