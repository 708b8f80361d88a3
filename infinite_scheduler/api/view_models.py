"""Response bodies of the read-only views the dashboard draws (routes/views.py): the overview,
the shards, the execution history and its SLA summary. Times of day are ISO 8601 (as every
other body of the API); the history's rows keep the epoch-ms fields of ``history --json``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from infinite_scheduler.api.models import at
from infinite_scheduler.api.store_views import Bucket, EntityView, NodeView, ShardView
from repos.history import HistoryRow, SlaReport, SlaSummary


class CallerOut(BaseModel):
    name: str
    role: str
    owner: str


class NodeOut(BaseModel):
    node_id: str
    epoch: int
    host: str
    pid: int
    version: str
    state: str
    started_at: datetime
    heartbeat_age_ms: int
    timed_out: bool

    @classmethod
    def of(cls, n: NodeView) -> NodeOut:
        return cls(
            node_id=n.node_id,
            epoch=n.epoch,
            host=n.host,
            pid=n.pid,
            version=n.version,
            state=n.state,
            started_at=at(n.started_at_ms),
            heartbeat_age_ms=n.heartbeat_age_ms,
            timed_out=n.timed_out,
        )


class ShardOut(BaseModel):
    name: str
    start: datetime
    end: datetime
    rows: dict[str, int]
    unfinished: int
    drops_at: datetime

    @classmethod
    def of(cls, s: ShardView) -> ShardOut:
        return cls(
            name=s.name,
            start=at(s.start_ms),
            end=at(s.end_ms),
            rows=s.rows,
            unfinished=s.unfinished,
            drops_at=at(s.drops_at_ms),
        )


class EntityOut(BaseModel):
    entity: str
    granularity: str
    retention_s: int
    rows: dict[str, int]
    shards: list[ShardOut]
    #: The shard retention drops next, with its unfinished rows (lost if still there then).
    drops_next: ShardOut | None

    @classmethod
    def of(cls, e: EntityView) -> EntityOut:
        return cls(
            entity=e.entity,
            granularity=e.granularity,
            retention_s=e.retention_ms // 1000,
            rows=e.rows,
            shards=[ShardOut.of(s) for s in e.shards],
            drops_next=None if e.drops_next is None else ShardOut.of(e.drops_next),
        )


class BacklogOut(BaseModel):
    """One entity type's rows not finished, by status (held: CLAIMED, in some node's wheel)."""

    entity: str
    pending: int
    held: int
    waiting: int
    paused: int

    @classmethod
    def of(cls, e: EntityView) -> BacklogOut:
        rows = e.rows
        return cls(
            entity=e.entity,
            pending=rows.get("PENDING", 0),
            held=rows.get("CLAIMED", 0),
            waiting=rows.get("WAITING", 0),
            paused=rows.get("PAUSED", 0),
        )


class RecentOut(BaseModel):
    """The history's last minute, over every node."""

    window_s: int
    fired: int
    fired_per_s: float
    failed: int
    late: int
    lateness_p99_ms: int | None


class BucketOut(BaseModel):
    start: datetime
    fired: int
    failed: int

    @classmethod
    def of(cls, b: Bucket) -> BucketOut:
        return cls(start=at(b.start_ms), fired=b.fired, failed=b.failed)


class OverviewOut(BaseModel):
    now: datetime
    nodes: list[NodeOut]
    backlog: list[BacklogOut]
    #: None when the execution history is off ([history] enabled = false).
    recent: RecentOut | None
    bucket_s: int
    series: list[BucketOut]


class HistoryRowOut(BaseModel):
    entity: str
    id: str
    at_ms: int
    attempt: int
    node: str
    category: str
    due_ms: int
    fired_ms: int | None
    finished_ms: int
    duration_ms: int | None
    lateness_ms: int | None
    outcome: str
    error: str | None

    @classmethod
    def of(cls, row: HistoryRow) -> HistoryRowOut:
        return cls(**row.as_dict())


class HistoryPageOut(BaseModel):
    rows: list[HistoryRowOut]
    #: Pass as `cursor` for the next page; None: this was the last.
    cursor: str | None


class SlaSummaryOut(BaseModel):
    entity: str
    category: str
    fired: int
    ok: int
    failed: int
    timeout: int
    retried: int
    missed: int
    cancelled: int
    late: int
    late_share: float
    failed_share: float
    sampled: int
    lateness_p50_ms: int | None
    lateness_p99_ms: int | None
    duration_p50_ms: int | None
    duration_p99_ms: int | None

    @classmethod
    def of(cls, s: SlaSummary) -> SlaSummaryOut:
        fields: dict[str, Any] = s.as_dict()
        return cls(**fields)


class SlaOut(BaseModel):
    start_ms: int
    end_ms: int
    late_threshold_ms: int
    groups: list[SlaSummaryOut]
    total: SlaSummaryOut

    @classmethod
    def of(cls, r: SlaReport) -> SlaOut:
        return cls(
            start_ms=r.start_ms,
            end_ms=r.end_ms,
            late_threshold_ms=r.late_threshold_ms,
            groups=[SlaSummaryOut.of(g) for g in r.groups],
            total=SlaSummaryOut.of(r.total),
        )
