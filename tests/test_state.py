"""The state file's format and its checks (imgurd/state.py), in-process; restarts of the real command are
in test_restarts.py."""

import asyncio
import gzip
import json
import time

import pytest

from imgurd import state
from imgurd.jobs import JobStore
from imgurd.reports import job_document
from imgurd.service import Service
from imgurd.settings import defaults
from imgurd.state import StateError, StateKeeper, read_file, take_snapshot, write_file

HEADER = {"format": "imgurd-state", "version": 1, "api_url": "https://api.imgur.com", "dry_run": False}


def finish(store, item, link=None, error=None):
    store.start(item)
    if link is not None:
        store.complete(item, link)
    elif error is not None:
        store.fail(item, error)


def sample_store():
    """Job a: in flight, complete, failed, in flight, pending, pending. Job b: all complete (finished)."""
    store = JobStore(job_ttl=3600, max_jobs=100)
    a = store.add(["http://origin.test/a/%d.jpg" % i for i in range(6)], "key-a")
    b = store.add(["http://origin.test/b/%d.jpg?q=\u00e9" % i for i in range(2)])
    a0, b0, a1, b1, a2, a3 = [store.next_item() for _ in range(6)]  # round robin
    store.start(a0)
    finish(store, b0, link="https://i.imgur.com/bbbbbbb.png")
    finish(store, a1, link="https://i.imgur.com/aaaaaaa.jpg")
    finish(store, b1, link="https://i.imgur.com/aaaaaaa.jpg")  # identical bytes: the same link
    finish(store, a2, error="origin answered HTTP 404")
    store.start(a3)
    digests = {bytes(range(32)): "https://i.imgur.com/aaaaaaa.jpg", bytes(32): "https://i.imgur.com/bbbbbbb.png"}
    return store, a, b, digests


def save(store, digests, path, header=HEADER):
    snapshot = asyncio.run(take_snapshot(store, digests))
    return write_file(str(path), snapshot, dict(header))


def test_round_trip_keeps_jobs_links_and_digests_and_requeues_what_was_in_flight(tmp_path):
    store, a, b, digests = sample_store()
    path = tmp_path / "state.gz"
    size = save(store, digests, path)
    assert size == path.stat().st_size and path.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "state.gz.tmp").exists()
    lines = [json.loads(line) for line in gzip.open(path)]  # plain gzip'd JSON Lines
    assert lines[0]["format"] == "imgurd-state" and lines[0]["version"] == 1
    assert lines[-1] == {"end": {"jobs": 2, "links": 2, "digests": 2}}

    loaded = read_file(str(path))
    restored = JobStore(job_ttl=3600, max_jobs=100)
    restored.adopt_links(loaded.links)
    for job in loaded.jobs:
        restored.adopt(job)
    assert loaded.digests == digests
    assert restored.links == store.links == ["https://i.imgur.com/bbbbbbb.png", "https://i.imgur.com/aaaaaaa.jpg"]
    new_a, new_b = restored.get(a.id), restored.get(b.id)
    assert job_document(restored.get(b.id)) == job_document(b)  # finished: exactly as it was
    before = job_document(a)
    for index in (0, 3):
        assert before["images"][index]["status"] == "in-progress"
        before["images"][index]["status"] = "pending"  # in flight at the snapshot: pending again
    assert job_document(new_a) == before
    assert restored.by_idempotency_key("key-a") is new_a
    assert restored.backlog == 4 and restored.in_flight == 0
    assert list(restored.finished_jobs) == [b.id]
    # only the unfinished URLs are handed out again, in order
    handed = []
    while True:
        item = restored.next_item()
        if item is None:
            break
        handed.append((item.job.id, item.index))
    assert handed == [(a.id, 0), (a.id, 3), (a.id, 4), (a.id, 5)]
    assert new_b.status == "complete" and new_a.status == "in-progress"


def test_a_restored_job_finishes_and_its_report_is_whole(tmp_path):
    store, a, _, digests = sample_store()
    save(store, digests, tmp_path / "s")
    restored = JobStore(job_ttl=3600, max_jobs=100)
    for job in read_file(str(tmp_path / "s")).jobs:
        restored.adopt(job)
    for n in range(4):
        finish(restored, restored.next_item(), link="https://i.imgur.com/new%04d.jpg" % n)
    report = job_document(restored.get(a.id))
    assert report["status"] == "complete" and report["finished"] is not None
    assert [i["status"] for i in report["images"]] == ["complete", "complete", "failed"] + ["complete"] * 3
    assert restored.backlog == 0 and restored.next_item() is None


def test_snapshot_yields_to_the_loop_between_slices(monkeypatch):
    monkeypatch.setattr(state, "SLICE_URLS", 10)
    store = JobStore(job_ttl=3600, max_jobs=100)
    for n in range(6):
        store.add(["http://origin.test/%d/%d.jpg" % (n, i) for i in range(10)])

    async def run():
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        before = ticks
        snapshot = await take_snapshot(store, {})
        done = True
        await task
        return snapshot, ticks - before

    snapshot, ticks = asyncio.run(run())
    assert len(snapshot.jobs) == 6
    assert ticks >= 5  # other callbacks ran between the slices


def test_finished_jobs_past_job_ttl_are_not_restored_and_digests_of_another_imgur_are_dropped(tmp_path):
    store, a, b, digests = sample_store()
    b.finished = time.time() - 7200  # finished two hours ago
    path = tmp_path / "state.gz"
    save(store, digests, path)
    keeper_store = JobStore(job_ttl=3600, max_jobs=100)
    links_by_digest = {}
    config = defaults(state_file=str(path), api_url="http://127.0.0.1:9", client_id="x")
    StateKeeper(config, keeper_store, links_by_digest).load()
    assert keeper_store.get(a.id) is not None and keeper_store.get(b.id) is None
    assert links_by_digest == {}  # links from https://api.imgur.com are not reused against another api_url
    assert keeper_store.links == store.links


def test_no_state_file_by_default():
    service = Service(defaults(client_id="x"))
    assert service.state is None
    service.close()


def gz_lines(*records):
    return gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode())


def valid_file_bytes(tmp_path):
    store, _, _, digests = sample_store()
    save(store, digests, tmp_path / "good")
    return (tmp_path / "good").read_bytes()


@pytest.mark.parametrize("make, expected", [
    (lambda good: b"not gzip at all", "is corrupt (Not a gzipped file"),
    (lambda good: good[: len(good) // 2], "is corrupt (truncated)"),
    (lambda good: good[:-8] + b"\0\0\0\0" + good[-4:], "is corrupt (CRC check failed"),
    (lambda good: gzip.compress(b"{not json\n"), "is not understood: line 1 is not JSON"),
    (lambda good: b"", "is empty"),
    (lambda good: gz_lines({"format": "something-else", "version": 1}), "does not start with an imgurd-state header"),
    (lambda good: gz_lines({"format": "imgurd-state", "version": 2, "imgurd": "9.0"}),
     "has format version 2, written by a newer imgurd (9.0)"),
    (lambda good: gz_lines({"format": "imgurd-state", "version": 1}), "is incomplete"),
    (lambda good: gz_lines({"format": "imgurd-state", "version": 1}, {"mystery": 1}),
     "line 2 is a record of an unknown kind"),
    (lambda good: gz_lines({"format": "imgurd-state", "version": 1},
                           {"job": "0" * 8 + "-0000-0000-0000-" + "0" * 12, "created": 1, "finished": None,
                            "idempotency_key": None, "urls": ["http://a/"], "status": ["complete"],
                            "links": [None], "errors": [None]}),
     "URL 0 is complete without a link"),
    (lambda good: gz_lines({"format": "imgurd-state", "version": 1},
                           {"job": "0" * 8 + "-0000-0000-0000-" + "0" * 12, "created": 1, "finished": None,
                            "idempotency_key": None, "urls": ["http://a/", "file:///etc/passwd"],
                            "status": ["pending", "pending"], "links": [None, None], "errors": [None, None]}),
     "'file:///etc/passwd' is not an http(s) URL"),
])
def test_files_it_cannot_use_raise_one_line(tmp_path, make, expected):
    path = tmp_path / "state.gz"
    path.write_bytes(make(valid_file_bytes(tmp_path)))
    with pytest.raises(StateError) as raised:
        read_file(str(path))
    message = str(raised.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_missing_file_is_a_first_start(tmp_path):
    assert read_file(str(tmp_path / "absent.gz")) is None


def test_a_symbolic_link_is_followed_and_kept_and_one_to_nowhere_stops_start_up(tmp_path):
    """A state_file linked to a volume is read and saved there, the link kept; a link into a directory that
    is not there (that volume not mounted) must not start empty and then save in the link's place."""
    volume = tmp_path / "volume"
    link = tmp_path / "state.gz"
    link.symlink_to("volume/state.gz")  # relative, as links usually are
    config = defaults(state_file=str(link), client_id="x")
    with pytest.raises(StateError, match="is a symbolic link to .*volume/state.gz, whose directory does not exist"):
        StateKeeper(config, JobStore(3600, 100), {}).load()
    volume.mkdir()
    store, _, _, digests = sample_store()
    save(store, digests, volume / "state.gz")
    keeper = StateKeeper(config, JobStore(3600, 100), {})
    keeper.load()
    assert len(keeper.store.jobs) == 2

    async def saved():
        keeper.start()
        keeper.store.add(["http://origin.test/new.jpg"])
        await keeper.stop()
    asyncio.run(saved())
    assert link.is_symlink() and len(read_file(str(volume / "state.gz")).jobs) == 3
    assert (volume / "state.gz.lock").exists() and not (tmp_path / "state.gz.lock").exists()


def test_a_symbolic_link_to_a_file_not_made_yet_is_a_first_start(tmp_path):
    (tmp_path / "volume").mkdir()
    (tmp_path / "state.gz").symlink_to(tmp_path / "volume" / "state.gz")
    keeper = StateKeeper(defaults(state_file=str(tmp_path / "state.gz"), client_id="x"), JobStore(3600, 100), {})
    keeper.load()
    assert keeper.path == str(tmp_path / "volume" / "state.gz") and not keeper.store.jobs


def test_a_second_process_cannot_use_the_same_file(tmp_path):
    config = defaults(state_file=str(tmp_path / "state.gz"), client_id="x")
    StateKeeper(config, JobStore(3600, 100), {}).load()
    with pytest.raises(StateError, match="in use by another imgurd process"):
        StateKeeper(config, JobStore(3600, 100), {}).load()


def test_restored_jobs_count_against_max_retained_bytes(tmp_path):
    store, a, b, digests = sample_store()
    path = tmp_path / "state.gz"
    save(store, digests, path)
    restored = JobStore(job_ttl=3600, max_jobs=100)
    for job in read_file(str(path)).jobs:
        restored.adopt(job)
    assert restored.retained_bytes == store.retained_bytes > 0  # as if they had run here
    assert restored.unfinished_bytes == sum(j.size for j in restored.jobs.values() if j.done < len(j)) > 0
