"""imgurd benchmarks (issue 5): is it fast, and is it bounded? Usage, options and run time: bench/README.md.

    pip install -e '.[bench]' && python -m bench            # everything
    python -m bench --only 1,2 --quick                      # a subset, smaller workloads
    python -m bench --profile                               # also py-spy profiles of the CPU runs
    python -m bench --compare-src /path/to/old/checkout     # also run scenarios 2 and 4 on another imgurd

The imgurd under test is the real ``imgurd`` command in a process of its own (``--allow-private-networks``,
``--api-url`` at the fake Imgur). The fake Imgur and the image origin (tests/fakes.py) run in two more
processes, load generators and probes in others, so the CPU seconds and RSS read from /proc belong to
imgurd alone. Everything listens on and connects to 127.0.0.1 only. Every figure of a run comes from
that run and targets are ratios of figures measured side by side, because the machine is shared and
noisy. The table goes to stdout and to bench/RESULTS.md; raw figures to bench/out/results.json.

Modules: ``children`` (processes), ``scenarios`` (what is measured; 6 in ``sidebyside``, with ``phases``
and the probes of ``instrument``), ``report`` (machine and table).
"""

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # python bench/run.py
    sys.path.insert(0, str(ROOT))

from bench.children import BENCH, OUT, Fake, echo  # noqa: E402
from bench.report import machine, report  # noqa: E402
from bench.scenarios import Bench  # noqa: E402

SCENARIOS = {"1": "throughput", "2": "cpu_cost", "3": "post_latency", "4a": "memory_in_flight", "4b": "scale",
             "5": "scale", "6": "relay"}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios to run, e.g. 1,3 (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller workloads (a smoke test, not for the record)")
    parser.add_argument("--profile", action="store_true", help="py-spy profiles of imgurd in scenario 2, and of imgurd and the relay in scenario 6 (bench/out)")
    parser.add_argument("--compare-src", metavar="DIR",
                        help="a directory holding another imgurd package: scenarios 2 and 4a run it as well")
    parser.add_argument("--no-wrk", action="store_true", help="scenario 3 with bench.load even if wrk is installed")
    parser.add_argument("--output", default=str(BENCH / "RESULTS.md"), help="where the report goes")
    options = parser.parse_args(argv)
    if options.compare_src:
        options.compare_src = str(Path(options.compare_src).resolve())
        assert (Path(options.compare_src) / "imgurd" / "cli.py").exists(), "--compare-src: no imgurd/cli.py there"
    wanted = [s.strip() for s in options.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SCENARIOS]
    if unknown:
        parser.error("unknown scenario(s): %s (choose from %s)" % (", ".join(unknown), ", ".join(SCENARIOS)))
    OUT.mkdir(exist_ok=True)
    command = "python -m bench" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(
        argv if argv is not None else sys.argv[1:]))
    started = datetime.datetime.now(datetime.timezone.utc)
    begin = time.monotonic()
    info = machine()
    echo("imgurd benchmarks on %s x%s, %s, tornado %s" % (info["cpu"], info["cores"], info["python"], info["tornado"]))
    bench = Bench(options)
    bench.imgur = Fake("imgur")
    bench.origin = Fake("origin")
    try:
        done = set()
        for key in wanted:
            method = SCENARIOS[key]
            if method not in done:
                done.add(method)
                getattr(bench, method)()
    finally:
        bench.imgur.stop()
        bench.origin.stop()
    wall = time.monotonic() - begin
    text = report(bench, info, command, started, wall)
    Path(options.output).write_text(text, encoding="utf-8")
    (OUT / "results.json").write_text(json.dumps({"machine": info, "rows": bench.rows, "details": bench.details},
                                                 indent=1, default=str), encoding="utf-8")
    echo("")
    echo("\n".join(line for line in text.splitlines() if line.startswith("|")))
    echo("\nwritten to %s in %.0f s" % (options.output, wall))
    return 0 if all(row["result"] != "MISSED" for row in bench.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
