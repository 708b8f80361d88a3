"""The ingest path's own client CPU, in-process and without a database: what W1's client spends
besides the driver, split into encoding (EntitySpec.encode_batch: checks, times, payloads) and
rendering (the MySQL adapter's INSERT of each 1,000-row batch from its JSON document, as the
adapter's insert() renders it). Each is the least of 5 passes over the same jobs, which a busy
machine barely moves: the figure to iterate on between harness runs.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from benchmarks.common import Options, now_ms, result, sms
from benchmarks.loader import spread
from benchmarks.stats import Result
from benchmarks.store import POLICY
from repos.base import Status
from repos.entity import DEFAULT_MAX_PAYLOAD_BYTES
from repos.examples import SMS
from repos.mysql import sql
from repos.mysql.literals import literal, shared_columns, with_document
from repos.shards import bucket_of
from repos.statements import chunks

HOUR_MS = 3_600_000
PASSES = 5
#: The claim columns of a PENDING row, as the adapter renders them (the multi-table layout has
#: no columns of its own after priority and category).
PENDING_STATE = f",0,0,{literal('')},0"
TARGET = f"`{SMS.table_prefix}_20261126`"


async def ingest(opts: Options) -> list[Result]:
    n = opts.pick(20_000, 20_000)
    start_ms = now_ms()
    # Due over the first hour of tomorrow (UTC): every batch in one shard, as W1's are but for
    # the one a run near midnight splits, which the adapter writes as VALUES.
    due_ms = bucket_of(start_ms, POLICY.granularity) + POLICY.granularity.span_ms
    batches = list(chunks(sms(range(1, n + 1), spread(due_ms, HOUR_MS, n)), opts.batch_size))

    def encode() -> None:
        for batch in batches:
            SMS.encode_batch(
                batch,
                now_ms=start_ms,
                retention_ms=POLICY.retention_ms,
                max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES,
                document_shard=POLICY.granularity,
            )

    encoded = [
        SMS.encode_batch(
            batch,
            now_ms=start_ms,
            retention_ms=POLICY.retention_ms,
            max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES,
            document_shard=POLICY.granularity,
        )
        for batch in batches
    ]
    names = {"id": SMS.id_field, "at": SMS.time_field, "id_type": sql.ID_TYPE[int]}
    shared = shared_columns(Status.PENDING, PENDING_STATE, "")

    def render() -> None:
        for rows in encoded:
            assert rows.document is not None  # the usual batch: one shard, all valid
            with_document(sql.INSERT_DOCUMENT, rows.document, target=TARGET, state=shared, **names)

    gc.collect()
    gc.freeze()  # the jobs themselves are the harness's, not the path's: out of every pass
    try:
        encode_us, render_us = _least_us(encode, n), _least_us(render, n)
    finally:
        gc.unfreeze()
    return [
        result(
            "ingest",
            opts,
            n,
            encode_cpu_us_per_job=round(encode_us, 3),
            render_cpu_us_per_job=round(render_us, 3),
            batch_size=opts.batch_size,
        )
    ]


def _least_us(work: Callable[[], None], n: int) -> float:
    """CPU microseconds per job of the least costly of PASSES runs of `work`."""
    spent = []
    for _ in range(PASSES):
        started = time.process_time()
        work()
        spent.append(time.process_time() - started)
    return min(spent) * 1e6 / n
