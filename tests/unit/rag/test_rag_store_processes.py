"""Several processes read one LanceDB table while another process rewrites it."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from llmserve.rag.chunking import Chunk
from llmserve.rag.store import ChunkStore

pytestmark = pytest.mark.unit

ROUNDS = 6


def row_chunks(round_no: int) -> list[Chunk]:
    """Round ``n`` of the file ``kb/a.md``: two chunks whose text names the round."""
    text = "wombat round{} part{}"
    return [
        Chunk(f"kb/a.md#{i}", "kb/a.md", "A", text.format(round_no, i), {}, f"h{round_no}{i}", i)
        for i in range(2)
    ]


def reader(uri: str, ready, stop, queue) -> None:
    """Search until ``stop`` is set; report the rounds seen and any anomaly."""
    store = ChunkStore(uri, "chunks", read_consistency_interval=0)
    seen: set[int] = set()
    problems: list[str] = []
    store.search("wombat", [1.0, 0.0], "hybrid", 10)
    ready.release()
    while not stop.is_set():
        try:
            hits = store.search("wombat", [1.0, 0.0], "hybrid", 10)
        except Exception as exc:  # reported, not raised: the parent asserts
            problems.append(repr(exc))
            continue
        rounds = {int(h.text.split("round")[1].split()[0]) for h in hits}
        if len(hits) != 2 or len(rounds) != 1:
            problems.append(f"saw a partial update: {[h.text for h in hits]}")
        seen |= rounds
    queue.put((sorted(seen), problems[:5]))


def test_readers_in_other_processes_see_atomic_reindexes(tmp_path):
    uri = str(tmp_path / "db")
    writer = ChunkStore(uri, "chunks", metadata_fields=[])
    writer.ensure_table(dim=2)
    writer.replace_files(["kb/a.md"], writer.rows_for(row_chunks(0), [[1.0, 0.0]] * 2))
    writer.rebuild_fts_index()

    context = multiprocessing.get_context("spawn")
    queue, ready, stop = context.Queue(), context.Semaphore(0), context.Event()
    readers = [context.Process(target=reader, args=(uri, ready, stop, queue)) for _ in range(2)]
    for process in readers:
        process.start()
    try:
        for _ in readers:
            # each reader has opened the table and searched (spawning and importing
            # LanceDB takes long on a busy 2-core machine)
            assert ready.acquire(timeout=180)
        for round_no in range(1, ROUNDS + 1):
            rows = writer.rows_for(row_chunks(round_no), [[1.0, 0.0]] * 2)
            writer.replace_files(["kb/a.md"], rows)
            writer.rebuild_fts_index()
            time.sleep(0.3)
        stop.set()
        results = [queue.get(timeout=60) for _ in readers]
    finally:  # a failed wait must not leave readers searching forever
        stop.set()
        for process in readers:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()

    for seen, problems in results:
        assert problems == []
        assert ROUNDS in seen  # the last re-index reached every running reader
        assert len(seen) > 1  # ... and readers followed along, not just at the end
