"""Instructions per image, imgurd next to the reference relay, counted by valgrind's callgrind.

    .venv/bin/python -m bench.instructions [--images 300] [--jobs-of 10,100]

Why: on this shared 2-core machine one turn's CPU seconds per image moves by 10% and more from one
turn to the next (scenario 6 of ``python -m bench``), so a change worth 2% cannot be seen there, and
a 1.10 target sits inside the noise. Instructions executed do not depend on what else runs: the same
code and workload give the same count within about 1% (jobs of 10; up to 4% with a few jobs of 100,
where how the loop batches its events matters).

Each service runs under ``valgrind --tool=callgrind`` (about 50 times slower) with counting off;
after a warm-up of 128 images it is switched on (``callgrind_control -i on``) for ``--images`` fresh
100 KB images POSTed in jobs of each size, then off, and the counts are dumped. Same fakes as the
bench (zero latency), imgurd with ``--max-concurrency 64 --max-per-host 64``, the relay at C = 64.
Both are slowed alike, so each loop turn handles more events than at full speed: a figure of the
code's work per image, not a replacement for scenario 6's CPU seconds.

What the counts leave out or bend, shown as columns of their own:
- the kernel (system calls, the network stack): about a tenth of either service's CPU time;
- SHA-256 (``libcrypto``, identical-bytes reuse): valgrind hides the CPU's SHA instructions, so
  OpenSSL runs a generic path of many more instructions (at full speed: about 75 us per 100 KB);
- copies and zeroing (``memcpy``, ``memset``): done with ``rep movsb`` / ``rep stosb``, counted one
  instruction per byte, so these columns read as bytes copied and bytes zeroed per image.
The ratio that matters is the one of the code paths: the interpreter, libcurl and the rest.
"""

import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

from bench.children import CLIENT_ID, OUT, RELAY, ROOT, Fake, call, echo, image_urls
from tests.daemon import environment, wait_listening

SIZE = 100 * 1024
CONCURRENCY = 64
WARM_UP = 2 * CONCURRENCY

# callgrind_annotate's object file -> column; memcpy/memset are told by function name
COLUMNS = (("interpreter", "libpython"), ("libcurl", "libcurl"), ("SHA-256", "libcrypto"))
OTHER, COPIED, ZEROED = "other", "bytes copied", "bytes zeroed"
CODE = ("interpreter", "libcurl", OTHER)  # what the ratio of the code paths adds up


def command(name: str, imgur: Fake, flags: List[str]) -> List[str]:
    """The relay, or an imgurd (the one its PYTHONPATH finds first: this checkout's or ``--compare-src``'s)."""
    if name == "relay":
        return [sys.executable, str(RELAY), "0", imgur.url, str(CONCURRENCY)]
    return [sys.executable, "-c", "import sys; sys.argv[0] = 'imgurd'; from imgurd.cli import main; main()",
            "--client-id", CLIENT_ID, "--api-url", imgur.url, "--allow-private-networks", "--host", "127.0.0.1",
            "--port", "0", "--shutdown-timeout", "1", "--max-concurrency", str(CONCURRENCY),
            "--max-per-host", str(CONCURRENCY), *flags]


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=120)


def split_counts(dump: str) -> Dict[str, int]:
    """A callgrind dump's instructions by column (see COLUMNS), from ``callgrind_annotate``'s self costs."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", dump], check=True,
                          capture_output=True, text=True, timeout=300).stdout
    counts = dict.fromkeys([name for name, _ in COLUMNS] + [OTHER, COPIED, ZEROED], 0)
    for line in text.splitlines():
        match = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)$", line)
        if not match or "PROGRAM TOTALS" in line:
            continue
        number, where = int(match.group(1).replace(",", "")), match.group(2)
        if re.search(r"\bmem(cpy|move)", where):
            column = COPIED
        elif re.search(r"\bmemset", where):
            column = ZEROED
        else:
            column = next((name for name, library in COLUMNS if library in where), OTHER)
        counts[column] += number
    return counts


def measure(name: str, src: Path, imgur: Fake, origin: Fake, images: int, sizes: List[int], seed: int,
            flags: List[str]) -> Dict[int, Dict[str, int]]:
    """Instructions of ``images`` images through service ``name`` (imgurd from ``src``), for each job size."""
    prefix = str(OUT / ("callgrind-%s" % name))
    for old in glob.glob(prefix + "*"):
        os.unlink(old)
    log = open(OUT / ("callgrind-%s.log" % name), "w")
    process = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=" + prefix,
                                *command(name, imgur, flags)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=log, cwd=str(src),  # python -c puts the working directory first on sys.path
                               env=environment({"PYTHONPATH": str(src)}))
    try:
        port = wait_listening(process, 300)
        if port is None:
            raise RuntimeError("%s did not start under valgrind: see %s" % (name, log.name))

        def turn(count: int, batch: int) -> None:
            nonlocal seed
            urls = image_urls(origin, SIZE, seed, count)
            seed += count
            target = imgur.stats()["uploaded"] + count
            for start in range(0, count, batch):
                status, answer = call(port, "POST", "/v1/images/upload",
                                      json.dumps({"urls": urls[start:start + batch]}).encode(), timeout=300)
                if status != 202:
                    raise RuntimeError("%s: POST answered %d: %s" % (name, status, answer[:200]))
            deadline = time.monotonic() + 60 + count  # about 0.2 s an image under callgrind
            while imgur.stats()["uploaded"] < target:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("%s: uploads missing (see %s)" % (name, log.name))
                time.sleep(0.1)
            time.sleep(1)  # the last answers' callbacks (job books, logs) run too

        turn(WARM_UP, CONCURRENCY)
        counts = {}
        for number, batch in enumerate(sizes, 1):
            callgrind_control("--instr=on", str(process.pid))
            turn(images, batch)
            callgrind_control("--instr=off", str(process.pid))
            callgrind_control("--dump", str(process.pid))
            dumps = [path for path in glob.glob(prefix + ".*") if re.search(r"\.\d+$", path)]
            counts[batch] = split_counts(max(dumps, key=lambda path: int(path.rsplit(".", 1)[1])))
            assert len(dumps) == number, dumps
        return counts
    finally:
        process.send_signal(signal.SIGKILL)  # counts are dumped; what it would write at exit is not needed
        process.wait(60)
        log.close()


def report(results: Dict[str, Dict[int, Dict[str, int]]], images: int) -> None:
    services = list(results)
    columns = [name for name, _ in COLUMNS if name != "SHA-256"] + [OTHER, "SHA-256", COPIED, ZEROED]
    echo("| jobs of | service | code paths | %s |" % " | ".join(columns))
    echo("| --- | --- | --- |%s" % (" --- |" * len(columns)))
    for batch in results["imgurd"]:
        for name in services:
            counts = results[name][batch]
            code = sum(counts[column] for column in CODE)
            echo("| %d | %s | %.2f M | %s |" % (batch, name, code / images / 1e6, " | ".join(
                "%.2f M" % (counts[column] / images / 1e6) if column not in (COPIED, ZEROED)
                else "%.0f KB" % (counts[column] / images / 1e3) for column in columns)))
    echo()
    for other in [name for name in ("relay", "compared") if name in results]:
        for batch in results[other]:
            theirs, mine = results[other][batch], results["imgurd"][batch]
            echo("jobs of %d, imgurd / %s per image: code paths %.3f, interpreter %.3f, libcurl %.3f"
                 % (batch, other, sum(mine[c] for c in CODE) / sum(theirs[c] for c in CODE),
                    mine["interpreter"] / theirs["interpreter"], mine["libcurl"] / theirs["libcurl"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="images counted per service and job size")
    parser.add_argument("--jobs-of", default="10,100", help="job sizes, comma-separated")
    parser.add_argument("--imgurd-only", action="store_true", help="leave the relay out (what a flag costs)")
    parser.add_argument("--compare-src", metavar="DIR", help="also the imgurd package in DIR (before/after)")
    parser.add_argument("flags", nargs="*", help="more imgurd flags, after --: -- --log-level WARNING")
    options = parser.parse_args()
    sizes = [int(size) for size in options.jobs_of.split(",")]
    missing = [tool for tool in ("valgrind", "callgrind_control", "callgrind_annotate") if shutil.which(tool) is None]
    if missing:
        echo("needs %s: apt-get install valgrind" % ", ".join(missing))
        return 2
    if not options.imgurd_only and not RELAY.exists():
        echo("needs the reference relay at %s (next to the repository, not in it)" % RELAY)
        return 2
    OUT.mkdir(exist_ok=True)
    imgur, origin = Fake("imgur"), Fake("origin")
    try:
        services = {} if options.imgurd_only else {"relay": ROOT}
        if options.compare_src:
            services["compared"] = Path(options.compare_src).resolve()
        services["imgurd"] = ROOT
        results = {}
        for number, (name, src) in enumerate(services.items()):
            echo("%s under callgrind: %d images in jobs of %s ..." % (name, options.images, options.jobs_of))
            results[name] = measure(name, src, imgur, origin, options.images, sizes, 1 + number * 10 ** 6,
                                    options.flags)
    finally:
        imgur.stop()
        origin.stop()
    echo("\nInstructions per image (millions; copies and zeroing in bytes), %d images of 100 KB per row:\n"
         % options.images)
    report(results, options.images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
