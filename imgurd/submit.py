"""``imgurd-submit``: send a list of image URLs to an imgurd server and print what became of each (SPEC 6).

The URLs (arguments, then ``--file`` lines) are de-duplicated the way the server does it, cut into
jobs of at most ``--batch`` URLs and submitted, each job with its own ``Idempotency-Key`` so a retry
never queues it twice. A ``503`` is waited out (``Retry-After``) and the same job sent again; a
``413`` splits the job (to the size its answer names, else in halves). Then one loop polls every job until all are complete (or
``--timeout``), and one row per input line is printed, in input order.

Nothing learned is lost: ``--output`` rewrites its file (atomically) as results arrive; a server that
stops answering is retried for ``--retry-for`` seconds (a restart), and a server gone for longer, or
one that forgot a job, ends the run with what is known printed and exit status 4; Ctrl-C prints what
is known too. ``--resume`` then reads the ``--output`` file and submits only what is not complete.
"""

import collections
import csv
import dataclasses
import datetime
import io
import json
import os
import sys
import tempfile
import time
import uuid
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import click

from . import __version__
from .apiclient import RETRY_FOR, ApiClient, DeadlineReached, JobUnknown, Lost, Rejected, SubmitError
from .urls import display, normalise

PROG = "imgurd-submit"
DEFAULT_SERVER = "http://127.0.0.1:8080"
POLL_FIRST = 0.5  # seconds between polls at first ...
POLL_MAX = 2.0  # ... growing to this
POLL_GROWTH = 1.5
EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_TIMEOUT, EXIT_LOST, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
CSV_HEADER = ("url", "status", "link", "error")


def plural(count: int, noun: str) -> str:
    return "%d %s%s" % (count, noun, "" if count == 1 else "s")


class UsageProblem(Exception):
    """Bad input or options: one line on stderr, exit status 2."""


class Forgotten(Exception):
    """The server answered 404 for jobs it had accepted (or reported) before: it restarted without its state."""

    def __init__(self, job_ids: List[str]) -> None:
        super().__init__(" ".join(job_ids))
        self.job_ids = job_ids


# --- input


FINAL = ("complete", "failed")
UNCHECKED = "\0"  # the key of an earlier row whose URL the server would now refuse


class Unique:
    """One distinct URL (by the server's normal form), with what became of it."""

    __slots__ = ("url", "key", "image")

    def __init__(self, url: str, key: str) -> None:
        self.url = url  # first occurrence, trimmed: the spelling the server reports
        self.key = key
        self.image: Optional[Dict[str, Any]] = None  # its last known entry of the job's ``images``

    @property
    def status(self) -> str:
        """``complete``, ``failed`` or, for anything unfinished (or never submitted), ``pending``."""
        status = self.image.get("status") if self.image else None
        return status if status in FINAL else "pending"


class Row:
    """One input line: the URL as the user wrote it (trimmed), and its distinct URL."""

    __slots__ = ("url", "unique")

    def __init__(self, url: str, unique: Unique) -> None:
        self.url = url
        self.unique = unique

    @property
    def status(self) -> str:
        return self.unique.status

    def entry(self) -> Dict[str, Optional[str]]:
        """The row as an ``images`` entry: link only when complete, error only when failed."""
        status = self.unique.status
        image = self.unique.image or {}
        return {"url": self.url, "status": status,
                "link": (image.get("link") or None) if status == "complete" else None,
                "error": (image.get("error") or None) if status == "failed" else None}


def read_lines(path: str) -> List[Tuple[str, str]]:
    """(URL, where) for every line of ``path`` (``-``: stdin) that is neither blank nor a comment."""
    name = "stdin" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as handle:
                data = handle.read()
    except OSError as error:
        raise UsageProblem("cannot read --file %s: %s" % (name, error.strerror or error)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UsageProblem("--file %s is not UTF-8 text (byte %d)" % (name, error.start)) from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            found.append((line, "%s line %d" % (name, number)))
    return found


def collect(arguments: Sequence[str], files: Sequence[str],
            earlier: Sequence[Tuple[str, str]] = ()) -> Tuple[List[Row], List[Unique]]:
    """(one Row per input line, in input order; the distinct URLs, in first-seen order).

    ``earlier``: (URL, where) rows of a ``--resume`` file, read first: the URLs given go after them,
    those already there once (the file keeps every result it had).
    """
    given = [(url.strip(), "argument %d" % number) for number, url in enumerate(arguments, 1)]
    for path in files:
        given.extend(read_lines(path))
    if not given and not earlier:
        raise UsageProblem("no URLs given: pass them as arguments or with --file PATH (- for stdin)")
    rows: List[Row] = []
    distinct: Dict[str, Unique] = {}
    in_earlier = set()
    for number, (url, where) in enumerate([(url.strip(), where) for url, where in earlier] + given):
        key = normalise(url)
        if key is None:
            if number >= len(earlier):
                raise UsageProblem("%s is not an http(s) URL: %s" % (where, display(url)))
            key = UNCHECKED + url  # a row an older version wrote: kept, never submitted (see run)
        if number < len(earlier):
            in_earlier.add(key)
        elif key in in_earlier:  # given again: its row is there already, from the earlier file
            continue
        unique = distinct.get(key)
        if unique is None:
            unique = distinct[key] = Unique(url, key)
        rows.append(Row(url, unique))
    return rows, list(distinct.values())


# --- submitting and polling


class Batch:
    """One job: up to ``--batch`` distinct URLs, its idempotency key, and once accepted its id.

    A job given with ``--job`` is ``adopted``: its URLs become known from its first report.
    """

    __slots__ = ("uniques", "key", "job_id", "done", "adopted", "seen", "waiting")

    def __init__(self, uniques: List[Unique], job_id: Optional[str] = None) -> None:
        self.uniques = uniques
        self.key = str(uuid.uuid4())  # made once; reused for every retry of this very batch
        self.job_id = job_id
        self.done = False
        self.adopted = job_id is not None
        self.seen = False  # the server has reported this job at least once
        self.waiting: Optional[str] = None  # what holds the job, as the progress line says it

    def split(self, size: Optional[int] = None) -> List["Batch"]:
        """This batch as jobs of at most ``size`` URLs (default: two halves), each with a key of its own."""
        uniques = self.uniques
        size = max(1, size if size is not None else (len(uniques) + 1) // 2)
        return [Batch(uniques[i:i + size]) for i in range(0, len(uniques), size)]

    def absorb(self, report: Dict[str, Any], rows: Optional[List[Row]] = None) -> None:
        """Take the job's ``images`` entries: by position, checked (and else found) by URL.

        The first report of an adopted job makes its rows, appended to ``rows``.
        """
        images = report.get("images")
        if not isinstance(images, list):
            raise SubmitError("the report of job %s has no images list" % self.job_id)
        if self.adopted and not self.seen and rows is not None:
            for image in images:
                url = str(image.get("url", "")) if isinstance(image, dict) else ""
                unique = Unique(url, normalise(url) or url)
                self.uniques.append(unique)
                rows.append(Row(url, unique))
        self.seen = True
        by_position = len(images) == len(self.uniques)
        by_key: Optional[Dict[str, Dict[str, Any]]] = None
        for index, unique in enumerate(self.uniques):
            image = images[index] if by_position else None
            if not (isinstance(image, dict) and image.get("url") == unique.url):
                if by_key is None:
                    by_key = {normalise(str(i.get("url", ""))): i for i in images if isinstance(i, dict)}
                image = by_key.get(unique.key)
            if image is not None and (unique.status == "pending" or image.get("status") in FINAL):
                unique.image = image  # never a result seen back to pending: a server restarted from an older state
        self.done = report.get("status") == "complete"
        self.waiting = waiting_text(report.get("waiting"))


def waiting_text(waiting: Any, today: Optional[datetime.date] = None) -> Optional[str]:
    """A job's ``waiting`` as the progress line says it: "waiting for Imgur's hourly budget until 11:00Z"."""
    if not isinstance(waiting, dict) or not isinstance(waiting.get("until"), str):
        return None
    budget = waiting.get("budget") if isinstance(waiting.get("budget"), str) else "budget"
    try:
        until = datetime.datetime.strptime(waiting["until"], "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return "waiting for Imgur's %s" % budget
    today = today or datetime.datetime.now(datetime.timezone.utc).date()
    shown = until.strftime("%H:%MZ" if until.date() == today else "%Y-%m-%d %H:%MZ")
    return "waiting for Imgur's %s until %s" % (budget, shown)


class Progress:
    """A click progress bar on a terminal; otherwise silent until the one summary line."""

    BAR_WIDTH = 36
    BUSY = " (server busy)"

    def __init__(self, total: int, enabled: bool, started: float) -> None:
        self.started = started
        self.total = total
        self.shown = 0
        self.waiting: Optional[str] = None
        self.bar = None
        if enabled:
            self.bar = click.progressbar(length=total, label=PROG, file=sys.stderr, show_pos=True,
                                         show_percent=False, item_show_func=lambda text: text)
            self._fit()

    def __enter__(self) -> "Progress":
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def update(self, done: int, failed: int, busy: bool = False, waiting: Optional[str] = None) -> None:
        """Redraw the bar; without one (not a terminal), one line each time Imgur's budgets start holding
        the jobs, since a day of waiting must not look like a hung command."""
        bar = self.bar
        changed, self.waiting = waiting != self.waiting, waiting
        if bar is None:
            if changed and waiting:
                click.echo("%s: %s (%d of %d done)" % (PROG, waiting, done, self.total), err=True)
            return
        elapsed = max(time.monotonic() - self.started, 1e-6)
        bar.current_item = "%d failed, %s%s" % (failed, waiting or "%.1f img/s" % (done / elapsed),
                                                self.BUSY if busy else "")
        self._fit()
        step = done - self.shown
        self.shown = done
        if step > 0:
            bar.update(step)
        else:
            bar.render_progress()

    def _fit(self) -> None:
        """A bar narrow enough for the longest line to fit the terminal: a wrapped line cannot be redrawn."""
        try:
            columns = os.get_terminal_size(sys.stderr.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        longest = "%s  []  %d/%d  00:00:00  %d failed, %s%s" % (
            PROG, self.total, self.total, self.total, self.waiting or "9999.9 img/s", self.BUSY)
        self.bar.width = max(5, min(self.BAR_WIDTH, (columns or 80) - 1 - len(longest)))  # type: ignore


def tally(rows: Sequence[Row]) -> Dict[str, int]:
    counts = {"complete": 0, "failed": 0, "pending": 0}
    for row in rows:
        counts[row.status] += 1
    return counts


class Submitter:
    def __init__(self, api: ApiClient, batch_size: int, deadline: Optional[float],
                 on_poll: Optional[Callable[[], None]] = None) -> None:
        self.api = api
        self.batch_size = batch_size
        self.deadline = deadline
        self.on_poll = on_poll  # called after every round of polls (--output rewrites its file)
        self.too_large: Optional[int] = None  # the largest job the server takes, once a 413 told
        self.accepted: List[Batch] = []
        self.queue: Deque[Batch] = collections.deque()  # batches not submitted yet
        # the client's retry policy without its budget: a busy server does answer (only --timeout ends the wait)
        self.busy = dataclasses.replace(api.retry, budget=None)
        self.refused = 0  # 503s in a row

    def attach(self, job_ids: Sequence[str], rows: List[Row]) -> None:
        """``--job``: poll each existing job once, in order, making its rows; an unknown id is an error."""
        for job_id in job_ids:
            batch = Batch([], job_id)
            batch.absorb(self.api.job(job_id, self.deadline), rows)
            self.accepted.append(batch)

    def waiting(self) -> Optional[str]:
        """What holds the unfinished jobs (Imgur's budget), as the progress line says it, or None."""
        return max((b.waiting for b in self.accepted if b.waiting and not b.done), default=None)

    def plan(self, uniques: List[Unique]) -> Deque[Batch]:
        size = self.batch_size
        return collections.deque(Batch(uniques[i:i + size]) for i in range(0, len(uniques), size))

    def submit_ready(self, queue: Deque[Batch]) -> Optional[float]:
        """Submit queued batches until the queue is empty (None) or the server is busy (a 503: the
        seconds to wait before sending the next one, as its Retry-After and the retry policy say).

        A batch larger than the server takes is split: to the size its answer names
        (``max_urls_per_job`` with a 413, ``max_queued_urls`` with a 503), else in halves (a 503
        whose ``job_bytes`` alone pass ``max_retained_bytes``).
        """
        while queue:
            batch = queue[0]
            count = len(batch.uniques)
            if self.too_large is not None and count > self.too_large:
                self._split(queue, self.too_large)  # known too large: split before sending
                continue
            reply = self.api.submit([u.url for u in batch.uniques], batch.key, self.deadline)
            if reply.status in (200, 201, 202) and isinstance(reply.document, dict) \
                    and isinstance(reply.document.get("jobId"), str):
                queue.popleft()
                batch.job_id = reply.document["jobId"]
                self.accepted.append(batch)
                self.refused = 0
                continue
            if reply.status == 413 and count > 1:
                size = reply.limit("max_urls_per_job")
                self.too_large = min(size if size is not None and size < count else (count + 1) // 2,
                                     self.too_large or count)
                continue
            if reply.status == 503:
                room = reply.limit("max_queued_urls")
                if room is not None and count > max(room, 1):
                    self._split(queue, max(room, 1))  # would never fit in the server's backlog, however long we wait
                    continue
                held, size = reply.limit("max_retained_bytes"), reply.limit("job_bytes")
                if held is not None and size is not None and size > held:  # nor in the job data it may hold
                    if count == 1:
                        raise Rejected(reply.status, reply.error, "submitting a job of 1 URL")
                    self._split(queue, (count + 1) // 2)
                    continue
                self.refused += 1
                return self.busy.next_wait(self.refused, retry_after=reply.retry_after())
            raise Rejected(reply.status, reply.error, "submitting a job of %s" % plural(count, "URL"))
        return None

    @staticmethod
    def _split(queue: Deque[Batch], size: int) -> None:
        batch = queue.popleft()
        queue.extendleft(reversed(batch.split(size)))

    def run_no_wait(self, uniques: List[Unique]) -> None:
        """Submit everything, printing each job id as soon as it is accepted."""
        queue = self.queue = self.plan(uniques)
        while queue:
            printed = len(self.accepted)
            try:
                busy = self.submit_ready(queue)
            finally:  # also those accepted before a later batch failed: a rerun would submit them twice
                for batch in self.accepted[printed:]:
                    click.echo(batch.job_id)
            if busy is not None:
                self.api.pause(busy, self.deadline)

    def run(self, uniques: List[Unique], rows: List[Row], progress: Progress) -> None:
        """Submit and poll in one loop until every job is complete; DeadlineReached on ``--timeout``."""
        queue = self.queue = self.plan(uniques)
        not_before = 0.0  # when the server said it would take a job again
        interval = POLL_FIRST
        clock = self.api.clock
        while True:
            if queue and clock() >= not_before:
                busy = self.submit_ready(queue)
                if busy is not None:
                    not_before = clock() + busy
            forgotten = []
            for batch in self.accepted:
                if not batch.done:
                    try:
                        report = self.api.job(batch.job_id, self.deadline)  # type: ignore[arg-type]
                    except JobUnknown:
                        forgotten.append(batch.job_id)
                        continue
                    batch.absorb(report, rows)
            if self.on_poll is not None:
                self.on_poll()
            if forgotten:
                raise Forgotten(forgotten)  # type: ignore[arg-type]
            counts = tally(rows)
            progress.update(counts["complete"] + counts["failed"], counts["failed"], bool(queue), self.waiting())
            if not queue and all(batch.done for batch in self.accepted):
                return
            wait = interval
            if queue:
                wait = min(wait, max(not_before - clock(), 0.0))
            self.api.pause(wait, self.deadline)
            interval = min(interval * POLL_GROWTH, POLL_MAX)


# --- output


def render(rows: Sequence[Row], fmt: str) -> str:
    """The results in ``fmt``: csv, json or links (complete ones only)."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for row in rows:
            entry = row.entry()
            writer.writerow((entry["url"], entry["status"], entry["link"] or "", entry["error"] or ""))
        return buffer.getvalue()
    if fmt == "json":
        return json.dumps([row.entry() for row in rows], ensure_ascii=False, indent=2) + "\n"
    links = (row.entry()["link"] for row in rows)
    return "".join(link + "\n" for link in links if link)


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


class OutputFile:
    """``--output PATH``: the results rewritten whenever they change, atomically (temporary file, then
    rename), so an interrupted run always leaves a whole file holding everything it learned."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path = path
        self.fmt = fmt
        self.last: Optional[str] = None

    def check(self) -> None:
        """Raise SubmitError unless PATH could be written, leaving it as it is (a file being resumed
        keeps its rows, failures and all, until results come)."""
        try:
            fd, temporary = self._temporary()
            os.close(fd)
            os.unlink(temporary)
        except OSError as error:
            raise SubmitError("cannot write --output %s: %s" % (self.path, error.strerror or error)) from None

    def _temporary(self) -> Tuple[int, str]:
        """A new file of our own beside the target (never one someone prepared, never a symlink)."""
        return tempfile.mkstemp(prefix=".%s." % os.path.basename(self.path), suffix=".tmp",
                                dir=os.path.dirname(os.path.abspath(self.path)))

    def write(self, rows: Sequence[Row]) -> None:
        text = render(rows, self.fmt)
        if text == self.last:
            return
        temporary = None
        try:
            fd, temporary = self._temporary()
            os.fchmod(fd, 0o666 & ~_UMASK)  # the mode any file this user writes would have
            with open(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as error:
            if temporary is not None:
                try:
                    os.unlink(temporary)
                except OSError:
                    pass
            raise SubmitError("cannot write --output %s: %s" % (self.path, error.strerror or error)) from None
        self.last = text


def read_earlier(path: str, fmt: str) -> Optional[List[Tuple[str, str, str, str]]]:
    """``--resume``: (url, status, link, error) of every row of an earlier ``--output`` file; None if there
    is none."""
    if fmt == "links":
        raise UsageProblem("--resume needs --format csv or json: a links file does not say which URL became "
                           "which link")
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise UsageProblem("--resume cannot read --output %s: %s" % (path, reason)) from None
    found: List[Tuple[str, str, str, str]] = []
    if fmt == "csv":
        table = list(csv.reader(io.StringIO(text)))
        if not table or tuple(table[0]) != CSV_HEADER:
            raise UsageProblem("--resume: %s is not a CSV written by %s (its header is not %s)"
                               % (path, PROG, ",".join(CSV_HEADER)))
        for number, row in enumerate(table[1:], 2):
            if len(row) != len(CSV_HEADER):
                raise UsageProblem("--resume: %s line %d does not have 4 fields" % (path, number))
            found.append((row[0], row[1], row[2], row[3]))
        return found
    try:
        entries = json.loads(text)
    except ValueError:
        raise UsageProblem("--resume: %s is not JSON (use the --format it was written in)" % path) from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("url"), str)
                                                for e in entries):
        raise UsageProblem("--resume: %s is not a JSON list of results written by %s" % (path, PROG))
    for entry in entries:
        link, error = entry.get("link"), entry.get("error")
        found.append((entry["url"], str(entry.get("status")), link if isinstance(link, str) else "",
                      error if isinstance(error, str) else ""))
    return found


def summary(rows: Sequence[Row], elapsed: float, waiting: Optional[str] = None) -> str:
    counts = tally(rows)
    line = "%s: %s, %d complete, %d failed" % (PROG, plural(len(rows), "URL"), counts["complete"], counts["failed"])
    if counts["pending"]:
        line += ", %d pending" % counts["pending"] + (" (%s)" % waiting if waiting else "")
    return line + " in %.1f s" % elapsed


def how_to_resume(rows: Sequence[Row], output: Optional[str], fmt: str) -> str:
    """The end of the line that says a run stopped early: what is left, and how to continue."""
    counts = tally(rows)
    left = len(rows) - counts["complete"]
    known = "%d of %s complete, %d failed, %d pending" % (counts["complete"], plural(len(rows), "URL"),
                                                           counts["failed"], counts["pending"])
    if fmt == "links":
        how = "to continue, run again with --format csv --output FILE, which --resume can continue"
    elif output:
        how = "to continue, run again with --output %s --resume (it submits only the %d not complete)" % (output, left)
    else:
        how = ("to continue, save these results to a file and run again with --output FILE --resume (it submits "
               "only the %d not complete)" % left)
    return "%s; %s" % (known, how)


# --- the command


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _seed_earlier(uniques: List[Unique], earlier: Sequence[Tuple[str, str, str, str]]) -> List[Unique]:
    """What a ``--resume`` file knew, shown until new results come; the URLs to submit again.

    A complete row keeps its link and is not submitted. A failed one keeps its reason while it is
    tried again (its new result replaces it). A row whose URL the server would now refuse (written by
    an older version) stays as it was, or failed if it was not, and is not submitted.
    """
    known = {}
    for url, status, link, error in earlier:
        key = normalise(url) or UNCHECKED + url.strip()
        if status == "complete" and link:
            known[key] = {"url": url, "status": "complete", "link": link, "error": None}
        elif status == "failed" and key not in known:
            known[key] = {"url": url, "status": "failed", "link": None, "error": error or None}
    for unique in uniques:
        unique.image = known.get(unique.key)
        if unique.key.startswith(UNCHECKED) and unique.status != "complete":
            unique.image = {"url": unique.url, "status": "failed", "link": None,
                            "error": (unique.image or {}).get("error") or "not an http(s) URL (not submitted)"}
    return [unique for unique in uniques if unique.status != "complete" and not unique.key.startswith(UNCHECKED)]


def _deliver(rows: List[Row], fmt: str, sink: Optional[OutputFile]) -> bool:
    """The results to ``--output`` or stdout; False if the file could not be written (they go to stdout)."""
    if sink is not None:
        try:
            sink.write(rows)
            return True
        except SubmitError as error:
            click.echo("%s: error: %s" % (PROG, error), err=True)
    click.echo(render(rows, fmt), nl=False)  # the results must go somewhere
    return sink is None


def _tell_submitted(submitter: Submitter, no_wait: bool, when: str) -> None:
    """Name the jobs already queued (with --no-wait their ids are on stdout already)."""
    if submitter.accepted and not no_wait:
        ids = " ".join(batch.job_id or "" for batch in submitter.accepted)
        click.echo("%s: jobs submitted %s: %s" % (PROG, when, ids), err=True)


def _unfinished(submitter: Submitter) -> str:
    """What the --timeout line adds: the unfinished jobs, which the server goes on with (``--job ID``
    waits for them without submitting again), and the URLs never submitted (the server was busy),
    which only ``--resume`` submits."""
    ids = [batch.job_id for batch in submitter.accepted if batch.job_id and not batch.done]
    never = sum(len(batch.uniques) for batch in submitter.queue)
    said = "; unfinished jobs: %s" % " ".join(ids) if ids else ""
    if never:
        said += "; %s never submitted (--output FILE --resume submits them)" % plural(never, "URL")
    return said


def _check_options(urls: Sequence[str], files: Sequence[str], output: Optional[str], resume: bool,
                   job_ids: Sequence[str], no_wait: bool) -> None:
    if resume and not output:
        raise UsageProblem("--resume needs --output PATH: the file of the run to continue")
    if no_wait and (output or job_ids):
        raise UsageProblem("--no-wait prints job ids and exits: it does not go with --output or --job")
    if job_ids and (urls or files or resume):
        raise UsageProblem("--job waits for jobs submitted earlier: give it without URLs, --file or --resume")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--server", envvar="IMGURD_SERVER", default=DEFAULT_SERVER, show_default=True, metavar="URL",
              help="Base URL of the imgurd server (env: IMGURD_SERVER).")
@click.option("--api-token", envvar="IMGURD_API_TOKEN", default=None, metavar="TOKEN",
              help="Sent as 'Authorization: Bearer TOKEN' (env: IMGURD_API_TOKEN).")
@click.option("--file", "files", multiple=True, metavar="PATH",
              help="Read URLs from PATH, one a line ('-' for stdin); blank lines and lines starting "
                   "with # are skipped. May be repeated; read after the URL arguments.")
@click.option("--batch", type=click.IntRange(min=1), default=1000, show_default=True, metavar="N",
              help="At most N URLs per job; a job the server finds too large is split to the size it names.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "links"]), default="csv", show_default=True,
              help="csv (url,status,link,error), json (a list of image entries) or links (complete ones only).")
@click.option("--output", metavar="PATH", default=None,
              help="Write the results to PATH instead of stdout, rewritten atomically as they arrive.")
@click.option("--resume", is_flag=True,
              help="Read --output PATH first and submit only the URLs not complete there (with no URL "
                   "given, the URLs of that file).")
@click.option("--job", "job_ids", multiple=True, metavar="ID",
              help="Submit nothing: wait for and print the job ID submitted earlier (e.g. with --no-wait). "
                   "May be repeated.")
@click.option("--no-wait", is_flag=True, help="Print the job ids, one a line, and exit without waiting.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Give up after SECONDS: print what is known (unfinished URLs as pending), exit 3.")
@click.option("--retry-for", type=click.FloatRange(min=0), default=RETRY_FOR, show_default=True, metavar="SECONDS",
              help="Keep retrying a server that stopped answering (a restart) this long before giving up "
                   "with exit 4.")
@click.version_option(__version__, "--version", prog_name=PROG, message="%(prog)s %(version)s")
@click.argument("urls", nargs=-1, metavar="[URL]...")
def command(server: str, api_token: Optional[str], files: Tuple[str, ...], batch: int, fmt: str,
            output: Optional[str], resume: bool, job_ids: Tuple[str, ...], no_wait: bool,
            timeout: Optional[float], retry_for: float, urls: Tuple[str, ...]) -> int:
    """Submit image URLs to an imgurd server and print, in input order, the Imgur link or the
    failure of each.

    Exit status: 0 all complete, 1 some failed (results still printed), 2 usage error, unreachable
    server or rejected request, 3 --timeout reached (unfinished URLs printed as pending), 4 the
    server went away or forgot a job (what is known printed, the rest as pending), 130 Ctrl-C (the
    same).
    """
    started = time.monotonic()
    _check_options(urls, files, output, resume, job_ids, no_wait)
    try:
        api = ApiClient(server, api_token or None, retry_for=retry_for)
    except ValueError as error:
        raise UsageProblem(str(error)) from None
    rows: List[Row] = []
    uniques: List[Unique] = []
    earlier = None
    if not job_ids:
        earlier = read_earlier(output, fmt) if resume and output else None
        if earlier is None and resume and not (urls or files):
            raise UsageProblem("--resume: %s does not exist yet and no URLs are given" % output)
        rows, uniques = collect(urls, files, [(url, "%s row %d" % (output, n)) for n, (url, *_)
                                              in enumerate(earlier or (), 1)])
        uniques = _seed_earlier(uniques, earlier or ())
    sink = OutputFile(output, fmt) if output else None
    deadline = started + timeout if timeout is not None else None
    submitter = Submitter(api, batch, deadline, on_poll=(lambda: sink.write(rows)) if sink else None)
    terminal = _stderr_is_terminal()
    stopped: Optional[str] = None  # why the run ended early, when it did
    code = EXIT_OK
    try:
        if no_wait:
            try:
                submitter.run_no_wait(uniques)
            except DeadlineReached:
                click.echo("%s: --timeout reached after %g s; %d of %s submitted" % (
                    PROG, timeout, sum(len(b.uniques) for b in submitter.accepted),
                    plural(len(uniques), "distinct URL")), err=True)
                return EXIT_TIMEOUT
            except Lost as error:
                click.echo("%s: %s; %d of %s submitted, their job ids printed" % (
                    PROG, error, sum(len(b.uniques) for b in submitter.accepted),
                    plural(len(uniques), "distinct URL")), err=True)
                return EXIT_LOST
            return EXIT_OK
        if sink is not None:  # at once: a PATH that cannot be written stops the run before anything is sent
            if earlier:
                sink.check()
            else:
                sink.write(rows)
        try:
            if job_ids:
                submitter.attach(list(dict.fromkeys(job_ids)), rows)
            with Progress(len(rows), terminal, started) as progress:
                submitter.run(uniques, rows, progress)
        except DeadlineReached:
            code = EXIT_TIMEOUT
        except Lost as error:
            stopped, code = str(error), EXIT_LOST
        except Forgotten as error:
            stopped, code = ("the server no longer knows job %s (it restarted without keeping its state, or "
                             "dropped the job under its max_jobs or job_ttl)" % ", ".join(error.job_ids)), EXIT_LOST
        except KeyboardInterrupt:
            stopped, code = "interrupted", EXIT_INTERRUPTED
    except SubmitError as error:
        click.echo("%s: error: %s" % (PROG, error), err=True)
        _tell_submitted(submitter, no_wait, "before the error")
        if not no_wait and (submitter.accepted or job_ids):  # results already seen are never lost
            _deliver(rows, fmt, sink)
        return EXIT_ERROR
    except KeyboardInterrupt:  # before the polling began
        if no_wait:
            _tell_submitted(submitter, no_wait, "before the interruption")
            raise
        stopped, code = "interrupted", EXIT_INTERRUPTED
    finally:
        api.close()
    if not _deliver(rows, fmt, sink):
        return EXIT_ERROR
    elapsed = time.monotonic() - started
    if stopped is not None:
        click.echo("%s: %s; %s" % (PROG, stopped, how_to_resume(rows, output, fmt)), err=True)
        return code
    timed_out = code == EXIT_TIMEOUT
    if not terminal:
        click.echo(summary(rows, elapsed, submitter.waiting())
                   + (" (--timeout reached%s)" % _unfinished(submitter) if timed_out else ""), err=True)
    elif timed_out:
        click.echo("%s: --timeout reached after %.1f s; %s still pending%s"
                   % (PROG, elapsed, plural(tally(rows)["pending"], "URL"), _unfinished(submitter)), err=True)
    if timed_out:
        return EXIT_TIMEOUT
    return EXIT_FAILED if tally(rows)["failed"] else EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> None:
    """The console script: click's parsing, with every error on one line and SPEC 6's exit statuses."""
    try:
        code = command.main(args=list(argv) if argv is not None else None, prog_name=PROG, standalone_mode=False)
    except click.UsageError as error:
        click.echo("%s: error: %s (see --help)" % (PROG, error.format_message().rstrip(".")), err=True)
        code = EXIT_ERROR
    except click.ClickException as error:
        click.echo("%s: error: %s" % (PROG, error.format_message()), err=True)
        code = EXIT_ERROR
    except UsageProblem as error:
        click.echo("%s: error: %s" % (PROG, error), err=True)
        code = EXIT_ERROR
    except click.Abort:
        click.echo("%s: interrupted" % PROG, err=True)
        code = 130
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_FAILED
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()
