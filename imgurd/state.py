"""The opt-in state file (``state_file``, SPEC 3): what imgurd knows survives a restart.

Format: gzip'd JSON Lines, one object a line, readable with ``zcat FILE | jq -c .``::

    {"format": "imgurd-state", "version": 1, "written": "...Z", "imgurd": "0.1.0", "api_url": ..., "dry_run": ...}
    {"job": "<id>", "created": <epoch s>, "finished": <epoch s>|null, "idempotency_key": <str>|null,
     "urls": [...], "status": ["complete", "pending", ...], "links": [<link>|null, ...],
     "errors": [<reason>|null, ...]}                          one a job; the lists run in parallel
    {"links": [...]}                                           the list of links, oldest first, in pieces
    {"digests": {"<SHA-256 hex>": "<link>", ...}}              the identical-bytes map, in pieces
    {"end": {"jobs": N, "links": N, "digests": N}}             proves the file is whole

A reader refuses a file whose version it does not know, so the format can change with the version.
No secret is written: no credentials, no tokens, no deletehashes.

Cost: the snapshot is taken on the event loop in slices of about ``SLICE_URLS`` URLs, each a cheap
copy of per-job arrays, yielding to other callbacks in between; encoding, compression and the
write (temporary file, fsync, rename, fsync of the directory) run in a thread of their own, encoding
at most ``ENCODE_CHUNK`` list entries per call so the thread never holds the GIL for long. Links and
digests are copied after the jobs, so they always cover every link the copied jobs hold.
"""

import asyncio
import concurrent.futures
import fcntl
import gzip
import json
import logging
import os
import re
import time
import zlib
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from . import __version__
from .jobs import STATE_NAMES, Job, JobStore
from .reports import utc_stamp

log = logging.getLogger("imgurd.state")

FORMAT = "imgurd-state"
VERSION = 1
SLICE_URLS = 10000  # URLs of jobs copied per loop iteration while taking a snapshot
ENCODE_CHUNK = 2048  # list entries per json.dumps call in the writer thread
RECORD_ITEMS = 10000  # links or digests per line
WRITE_BUFFER = 256 * 1024  # encoded bytes gathered before each compression call
COMPRESS_LEVEL = 1  # level 6 saves 5 % of the size for 75 % more CPU (bench/state.py)

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HTTP_URL = re.compile(r"https?://[^\s/?#]", re.IGNORECASE)  # cheap: 100,000 URLs are read at start-up
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_STATUS = {name: code for code, name in enumerate(STATE_NAMES)}


class StateError(Exception):
    """The state file cannot be used: start-up stops with this one line (exit status 2)."""


# --- the snapshot: taken on the loop, written in a thread


class Snapshot:
    """Copies of what the file holds, made of few objects (lists of strings, not a tuple an entry), so
    taking it neither allocates much on the loop nor wakes the garbage collector."""

    __slots__ = ("jobs", "links", "digests", "digest_links")

    def __init__(self) -> None:
        # (id, created, finished, idempotency key, urls, states, links or None, errors)
        self.jobs: List[Tuple[str, float, Optional[float], Optional[str], List[str], bytes,
                              Optional[List[Optional[str]]], Dict[int, str]]] = []
        self.links: List[str] = []
        self.digests: List[bytes] = []  # in step with digest_links
        self.digest_links: List[str] = []

    @property
    def unfinished(self) -> int:
        return sum(len(states) - states.count(2) - states.count(3) for _, _, _, _, _, states, _, _ in self.jobs)


async def take_snapshot(store: JobStore, links_by_digest: Dict[bytes, str]) -> Snapshot:
    """Copy what the state file holds, a slice of jobs per loop iteration."""
    snapshot = Snapshot()
    copied = 0
    for job_id in list(store.jobs):
        job = store.jobs.get(job_id)
        if job is None:  # evicted meanwhile
            continue
        snapshot.jobs.append((job.id, job.created, job.finished, job.idempotency_key, list(job.urls),
                              bytes(job.states), list(job.links) if job.links is not None else None,
                              dict(job.errors)))
        copied += len(job)
        if copied >= SLICE_URLS:
            copied = 0
            await asyncio.sleep(0)
    # after the jobs: these only grow, so they hold every link of the jobs copied above
    snapshot.links = store.links[:]
    snapshot.digests = list(links_by_digest)
    snapshot.digest_links = list(links_by_digest.values())
    return snapshot


def _json_list(values: Sequence[Any]) -> str:
    """A JSON array, encoded ``ENCODE_CHUNK`` entries per call, letting the event loop's thread have
    the GIL in between (at once, not after the interpreter's 5 ms switch interval)."""
    parts = []
    for start in range(0, len(values), ENCODE_CHUNK):
        parts.append(json.dumps(values[start:start + ENCODE_CHUNK], separators=(",", ":"))[1:-1])
        time.sleep(0)
    return "[" + ",".join(parts) + "]"


def _json_object(keys: Sequence[str], values: Sequence[Any]) -> str:
    """A JSON object of ``keys`` and ``values`` in step, encoded like ``_json_list``."""
    parts = []
    for start in range(0, len(keys), ENCODE_CHUNK):
        chunk = dict(zip(keys[start:start + ENCODE_CHUNK], values[start:start + ENCODE_CHUNK]))
        parts.append(json.dumps(chunk, separators=(",", ":"))[1:-1])
        time.sleep(0)
    return "{" + ",".join(parts) + "}"


def _records(snapshot: Snapshot, header: Dict[str, Any]) -> Iterator[str]:
    yield json.dumps(header, separators=(",", ":"))
    names = STATE_NAMES
    for job_id, created, finished, key, urls, states, links, errors in snapshot.jobs:
        status = [names[state] for state in states]
        error_list: List[Optional[str]] = [None] * len(urls)
        for index, reason in errors.items():
            error_list[index] = reason
        yield "".join((
            '{"job":', json.dumps(job_id), ',"created":', json.dumps(created), ',"finished":', json.dumps(finished),
            ',"idempotency_key":', json.dumps(key), ',"urls":', _json_list(urls), ',"status":', _json_list(status),
            ',"links":', _json_list(links if links is not None else [None] * len(urls)),
            ',"errors":', _json_list(error_list), "}",
        ))
    for start in range(0, len(snapshot.links), RECORD_ITEMS):
        yield '{"links":' + _json_list(snapshot.links[start:start + RECORD_ITEMS]) + "}"
    for start in range(0, len(snapshot.digests), RECORD_ITEMS):
        digests = [digest.hex() for digest in snapshot.digests[start:start + RECORD_ITEMS]]
        yield '{"digests":' + _json_object(digests, snapshot.digest_links[start:start + RECORD_ITEMS]) + "}"
    yield json.dumps({"end": {"jobs": len(snapshot.jobs), "links": len(snapshot.links),
                              "digests": len(snapshot.digests)}}, separators=(",", ":"))


def write_file(path: str, snapshot: Snapshot, header: Dict[str, Any]) -> int:
    """Write the snapshot to ``path`` atomically: temporary file, fsync, rename, fsync the directory.

    Returns the size in bytes. On any error the previous file stays as it was.
    """
    temporary = path + ".tmp"
    try:
        os.unlink(temporary)  # a leftover (a crash mid-write): never written through, whatever it is
    except FileNotFoundError:
        pass
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with open(fd, "wb", closefd=True) as raw:
            with gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=0) as packed:
                pending: List[bytes] = []
                size = 0
                for record in _records(snapshot, header):
                    line = (record + "\n").encode("ascii")
                    pending.append(line)
                    size += len(line)
                    if size >= WRITE_BUFFER:
                        packed.write(b"".join(pending))
                        pending, size = [], 0
                packed.write(b"".join(pending))
            raw.flush()
            os.fsync(raw.fileno())
            written = raw.tell()
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return written


# --- reading


class Loaded:
    """A state file read and checked whole, before anything of it is used."""

    def __init__(self) -> None:
        self.header: Dict[str, Any] = {}
        self.jobs: List[Job] = []
        self.links: List[str] = []
        self.digests: Dict[bytes, str] = {}


class _Bad(Exception):
    """Something in the file is not what version 1 writes."""


def _kind(value: Any, kinds: Any, what: str) -> Any:
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise _Bad("%s has the wrong type" % what)
    return value


def _job(record: Dict[str, Any]) -> Job:
    job_id = _kind(record.get("job"), str, "job id")
    if not _UUID.match(job_id):
        raise _Bad("job id %r is not a job id" % job_id[:80])
    created = _kind(record.get("created"), (int, float), "created")
    finished = record.get("finished")
    if finished is not None:
        _kind(finished, (int, float), "finished")
    key = record.get("idempotency_key")
    if key is not None:
        _kind(key, str, "idempotency_key")
    urls = _kind(record.get("urls"), list, "urls")
    status = _kind(record.get("status"), list, "status")
    links = _kind(record.get("links"), list, "links")
    errors = _kind(record.get("errors"), list, "errors")
    if not urls or not (len(urls) == len(status) == len(links) == len(errors)):
        raise _Bad("job %s: urls, status, links and errors differ in length" % job_id)
    if not all(isinstance(url, str) for url in urls):
        raise _Bad("job %s: a URL is not a string" % job_id)
    for url in urls:
        if _HTTP_URL.match(url) is None:  # a file: URL, say: never fetched, whatever the file says
            raise _Bad("job %s: %r is not an http(s) URL" % (job_id, url[:100]))
    job = Job(urls, key)
    job.id = job_id
    job.created = float(created)
    job.finished = float(finished) if finished is not None else None
    try:
        job.states = bytearray(_STATUS[name] for name in status)
    except (KeyError, TypeError):
        raise _Bad("job %s: unknown status" % job_id) from None
    job_links: Optional[List[Optional[str]]] = None
    for index, state in enumerate(job.states):
        link, error = links[index], errors[index]
        if state == 2:
            if not isinstance(link, str) or not link:
                raise _Bad("job %s: URL %d is complete without a link" % (job_id, index))
            if job_links is None:
                job_links = [None] * len(urls)
            job_links[index] = link
        elif state == 3:
            if not isinstance(error, str):
                raise _Bad("job %s: URL %d failed without a reason" % (job_id, index))
            job.errors[index] = error
    job.links = job_links
    return job


def _strings(values: Any, what: str) -> List[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _Bad("%s is not a list of strings" % what)
    return values


def read_file(path: str) -> Optional[Loaded]:
    """The checked content of ``path``, None if there is no such file, else StateError."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StateError("cannot read state_file %s: %s" % (path, error.strerror or error)) from None
    loaded = Loaded()
    seen = set()
    end = None
    number = 0
    try:
        with handle, gzip.GzipFile(fileobj=handle, mode="rb") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    record = json.loads(line)
                except ValueError:
                    raise _Bad("line %d is not JSON" % number) from None
                if not isinstance(record, dict):
                    raise _Bad("line %d is not a JSON object" % number)
                if number == 1:
                    _check_header(path, record)
                    loaded.header = record
                elif end is not None:
                    raise _Bad("line %d follows the end record" % number)
                elif "job" in record:
                    job = _job(record)
                    if job.id in seen:
                        raise _Bad("job %s appears twice" % job.id)
                    seen.add(job.id)
                    loaded.jobs.append(job)
                elif "links" in record:
                    loaded.links.extend(_strings(record["links"], "line %d: links" % number))
                elif "digests" in record:
                    digests = _kind(record["digests"], dict, "line %d: digests" % number)
                    for digest, link in digests.items():
                        if not _DIGEST.match(digest) or not isinstance(link, str):
                            raise _Bad("line %d: a digest entry is malformed" % number)
                        loaded.digests[bytes.fromhex(digest)] = link
                elif "end" in record:
                    end = _kind(record["end"], dict, "the end record")
                else:
                    raise _Bad("line %d is a record of an unknown kind" % number)
    except StateError:
        raise
    except _Bad as error:
        raise StateError("state_file %s is not understood: %s (fix or move it away; imgurd never "
                         "overwrites it)" % (path, error)) from None
    except (OSError, EOFError, zlib.error) as error:
        reason = "truncated" if isinstance(error, EOFError) else (str(error) or type(error).__name__)
        raise StateError("state_file %s is corrupt (%s); fix or move it away (imgurd never overwrites it)"
                         % (path, reason)) from None
    if number == 0:
        raise StateError("state_file %s is empty; move it away (imgurd never overwrites it)" % path)
    counts = {"jobs": len(loaded.jobs), "links": len(loaded.links), "digests": len(loaded.digests)}
    if end != counts:
        raise StateError("state_file %s is incomplete (its end record is missing or does not match); fix or "
                         "move it away (imgurd never overwrites it)" % path)
    return loaded


def _check_header(path: str, header: Dict[str, Any]) -> None:
    if header.get("format") != FORMAT:
        raise _Bad("it does not start with an %s header" % FORMAT)
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _Bad("its format version %r is not valid" % (version,))
    if version > VERSION:
        raise StateError("state_file %s has format version %d, written by a newer imgurd (%s); this imgurd %s "
                         "reads version %d: run the newer one, or move the file away"
                         % (path, version, header.get("imgurd", "unknown version"), __version__, VERSION))


# --- the keeper: load at start, save every state_interval and at shutdown


class StateKeeper:
    """Owns the state file of one imgurd process (its lock included)."""

    def __init__(self, config, store: JobStore, links_by_digest: Dict[bytes, str]) -> None:
        self.path: str = config.state_file
        self.config = config
        self.interval = float(config.state_interval)
        self.store = store
        self.links_by_digest = links_by_digest
        self._lock_fd: Optional[int] = None
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgurd-state")
        self._saving: Optional[asyncio.Lock] = None
        self._stop: Optional[asyncio.Event] = None
        self._task: Optional["asyncio.Task[None]"] = None
        self._saved_as: Optional[Tuple[Any, ...]] = None  # fingerprint of the state last written

    def header(self) -> Dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "written": utc_stamp(time.time()), "imgurd": __version__,
                "api_url": self.config.api_url, "dry_run": bool(self.config.dry_run)}

    def fingerprint(self) -> Tuple[Any, ...]:
        """Changes whenever what the file would hold changes (jobs added or evicted, URLs finished, links)."""
        store = self.store
        newest = next(reversed(store.jobs)) if store.jobs else None
        return (len(store.jobs), newest, store.backlog, len(store.links), len(self.links_by_digest))

    # --- start-up

    def load(self) -> None:
        """Lock the file for this process, read it and restore what it holds; StateError if impossible."""
        started = time.monotonic()
        self._follow_link()
        self._take_lock()
        loaded = read_file(self.path)
        if loaded is None:
            log.info("no state file at %s yet: starting empty; state is saved there every %g s and at shutdown",
                     self.path, self.interval)
            self._saved_as = None
            return
        store = self.store
        store.adopt_links(loaded.links)
        jobs = sorted(loaded.jobs, key=lambda job: (job.finished is None, job.finished or 0.0))
        for job in jobs:  # finished ones first, oldest finished first: the order eviction needs
            store.adopt(job)
        while store.evict() > 0:  # past job_ttl or over max_jobs now
            pass
        same_uploader = (loaded.header.get("api_url") == self.config.api_url
                         and bool(loaded.header.get("dry_run")) == bool(self.config.dry_run))
        if same_uploader:
            self.links_by_digest.update(loaded.digests)
        elif loaded.digests:
            log.warning("state_file %s was written for another Imgur (api_url or dry_run differ): its %d links "
                        "of identical bytes are not reused", self.path, len(loaded.digests))
        log.info("state loaded from %s: %d jobs (%d URLs to resume), %d links, %d identical-bytes entries in %.2f s",
                 self.path, len(store.jobs), store.backlog, len(store.links),
                 len(loaded.digests) if same_uploader else 0, time.monotonic() - started)
        self._saved_as = self.fingerprint()

    def _follow_link(self) -> None:
        """A state_file that is a symbolic link (to a volume, say) is read and written where it points,
        the link kept (a first start creates the file there); one into a directory that does not
        exist (that volume not mounted) stops start-up rather than saving in the link's place."""
        if not os.path.islink(self.path):
            return
        target = os.path.realpath(self.path)
        if not os.path.isdir(os.path.dirname(target)):
            raise StateError("state_file %s is a symbolic link to %s, whose directory does not exist"
                             % (self.path, target))
        log.info("state_file %s is a symbolic link: using %s", self.path, target)
        self.path = target

    def _take_lock(self) -> None:
        lock_path = self.path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise StateError("cannot use state_file %s: cannot create %s: %s"
                             % (self.path, lock_path, error.strerror or error)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StateError("state_file %s is in use by another imgurd process (it holds %s)"
                             % (self.path, lock_path)) from None
        self._lock_fd = fd
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.access(directory, os.W_OK):  # the lock file may be there already; new files could not be
            raise StateError("cannot use state_file %s: cannot write in %s" % (self.path, directory))

    # --- running

    def start(self) -> None:
        self._saving = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._every_interval())

    async def _every_interval(self) -> None:
        assert self._stop is not None
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
                return
            except asyncio.TimeoutError:
                pass
            if self.fingerprint() != self._saved_as:
                await self.save(periodic=True)

    async def save(self, periodic: bool = False) -> bool:
        """Write the state now (one write at a time); False, logged, if it could not be written."""
        assert self._saving is not None
        async with self._saving:
            started = time.monotonic()
            fingerprint = self.fingerprint()
            snapshot = await take_snapshot(self.store, self.links_by_digest)
            loop = asyncio.get_running_loop()
            try:
                size = await loop.run_in_executor(self._writer, write_file, self.path, snapshot, self.header())
            except Exception as error:
                reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
                log.error("cannot write state_file %s: %s (the previous file, if any, is kept)", self.path, reason)
                return False
            self._saved_as = fingerprint
            log.log(logging.DEBUG if periodic else logging.INFO,
                    "state saved to %s: %d jobs, %d unfinished URLs, %d links, %d bytes in %.2f s",
                    self.path, len(snapshot.jobs), snapshot.unfinished, len(snapshot.links), size,
                    time.monotonic() - started)
            return True

    async def stop(self) -> bool:
        """The last save, at shutdown (after the drain). True if the file now holds the final state."""
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            await self._task  # lets a periodic write in progress finish first
        saved = await self.save()
        self._writer.shutdown(wait=True)
        return saved
