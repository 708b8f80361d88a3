"""EntitySpec.encode_many takes the usual batch a column at a time: it must store exactly the
rows, and raise exactly the error, that encoding entity by entity gives (the oracle here); and
so must encode_batch when it makes the batch's JSON document (document_shard, the MySQL
adapter's insert), whose payloads are cut out of the document only when asked for."""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from repos.entity import DICTS_AT_ONCE, EncodedBatch, EncodedRow, EntitySpec, _values_getter
from repos.errors import PayloadTooLarge, SchedulerError, ShardExpired
from repos.examples import NOTIFICATIONS, ORDERS, SMS, NotificationEntity, OrderEntity, SmsEntity
from repos.shards import Granularity, bucket_of
from repos.statements import chunks

NOW = int(datetime(2026, 11, 22, 12, tzinfo=UTC).timestamp() * 1000)
WEEK_MS = 7 * 86_400_000
LIMIT = 300


class PydanticJob(BaseModel):
    id: int
    scheduled_at: datetime
    note: str
    due: datetime | None = None


class SubSms(SmsEntity):
    """A subclass of the model: welcome, but encode() judges it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LookAlike:
    """Not an SmsEntity, though it has all its fields."""

    id: Any
    scheduled_at: Any
    phone: str
    message: Any


class SubDatetime(datetime):
    pass


class Unmoored(datetime):
    """Has a tzinfo but says it has no offset: naive, to encode()."""

    def utcoffset(self) -> None:
        return None


PYDANTIC = EntitySpec.of(PydanticJob, name="pjob")
#: Aware, in the week kept: stored (a subclass too).
GOOD_TIMES = [
    datetime(2026, 11, 22, 13, 0, 0, 1, tzinfo=UTC),
    datetime(2026, 11, 23, 1, 2, 3, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2026, 11, 22, 14, tzinfo=ZoneInfo("Europe/Paris")),
    SubDatetime(2026, 11, 22, 15, tzinfo=UTC),
]
BAD_TIMES: list[Any] = [
    datetime(2026, 11, 10, tzinfo=UTC),  # older than a week: ShardExpired
    datetime(2026, 11, 22, 13),  # naive
    Unmoored(2026, 11, 22, 13, tzinfo=UTC),
    None,
    "2026-11-22T13:00:00Z",
]
TEXTS = [
    "hello",
    "",
    'it\'s "quoted" \\ back',
    "nul \x00 and ,\x00, inside",
    "é 日本 🎉",
    "x" * 400,
]


@dataclass(frozen=True)
class Kind:
    """Entities of one spec: good values for each part, and values encode() refuses."""

    spec: EntitySpec[Any, Any]
    make: Callable[[Any, Any, Any], Any]  #: (id, sharding time, a payload value) -> entity
    keys: list[Any]
    bad_keys: list[Any]
    values: list[Any]
    bad_values: list[Any]
    strangers: list[Callable[[Any, Any, Any], Any]] = field(default_factory=list)


def pydantic_job(key: Any, at: Any, due: Any) -> PydanticJob:
    job = PydanticJob(id=1, scheduled_at=GOOD_TIMES[0], note="n")
    job.id, job.scheduled_at, job.due = key, at, due  # validated on input only
    return job


KINDS = [
    Kind(
        SMS,
        lambda k, t, v: SmsEntity(id=k, scheduled_at=t, phone="+1", message=v),
        keys=[1, 2, 3, -(2**63), 2**63 - 1],
        bad_keys=[2**63, -(2**63) - 1, True, None, "7"],
        values=TEXTS,
        bad_values=[{"a set"}, b"bytes", object()],
        strangers=[
            lambda k, t, v: SubSms(id=k, scheduled_at=t, phone="+1", message=v),
            lambda k, t, v: LookAlike(id=k, scheduled_at=t, phone="+1", message=v),
        ],
    ),
    Kind(
        ORDERS,
        lambda k, t, v: OrderEntity(
            order_id=k, expires_at=t, customer_id=1, amount_cents=5, created_at=v
        ),
        keys=["ord-1", "ORD-1", "é", "o" * 191],
        bad_keys=["o" * 192, "", 5, None, b"ord-1"],
        values=[None, *GOOD_TIMES],
        bad_values=BAD_TIMES[1:],
    ),
    Kind(
        NOTIFICATIONS,
        lambda k, t, v: NotificationEntity(id=k, deliver_at=t, user_id=3, title="t", data=v),
        keys=[1, 2],
        bad_keys=[None],
        values=[{}, {"n": [1, 2.5, None]}, {"deep": {"x": "\n"}}],
        bad_values=[{1: "int key"}, {"s": {1}}],
    ),
    Kind(
        PYDANTIC,
        pydantic_job,
        keys=[1, 2],
        bad_keys=["1"],
        values=[None, *GOOD_TIMES],
        bad_values=BAD_TIMES[1:],
    ),
]


@st.composite
def batches(draw: st.DrawFn) -> tuple[EntitySpec[Any, Any], list[Any]]:
    """A batch of one spec, good but for a flaw or two (a bad id, time, value or class)."""
    kind = draw(st.sampled_from(KINDS))
    parts = [
        [
            draw(st.sampled_from(kind.keys)),
            draw(st.sampled_from(GOOD_TIMES)),
            draw(st.sampled_from(kind.values)),
        ]
        for _ in range(draw(st.integers(0, 6)))
    ]
    makers = [kind.make] * len(parts)
    for flaw in draw(st.lists(st.sampled_from(["id", "time", "value", "class"]), max_size=2)):
        if parts:
            i = draw(st.integers(0, len(parts) - 1))
            if flaw == "class" and kind.strangers:
                makers[i] = draw(st.sampled_from(kind.strangers))
            elif flaw != "class":
                bad = {"id": kind.bad_keys, "time": BAD_TIMES, "value": kind.bad_values}[flaw]
                parts[i][["id", "time", "value"].index(flaw)] = draw(st.sampled_from(bad))
    return kind.spec, [make(*p) for make, p in zip(makers, parts, strict=True)]


def one_by_one(spec: EntitySpec[Any, Any], entities: list[Any]) -> list[EncodedRow]:
    """The oracle: encode_many as it was, entity by entity, then the store's limits in order."""
    rows = [spec.encode(e) for e in entities]
    for row in rows:
        if row.at_ms < NOW - WEEK_MS:
            raise ShardExpired(
                spec.name, row.key, spec.time_field, row.at_ms, now_ms=NOW, retention_ms=WEEK_MS
            )
        if len(row.payload) > LIMIT:
            raise PayloadTooLarge(spec.name, row.key, len(row.payload), LIMIT)
    return rows


#: Shards of a day: every GOOD_TIMES is in one (2026-11-22 UTC), so good batches get a document.
DAY_SHARDS = Granularity.DAY


def in_bulk(spec: EntitySpec[Any, Any], batch: list[Any], document: bool) -> list[EncodedRow]:
    """encode_many's rows, or encode_batch's made with its document, cut into rows."""
    if not document:
        return spec.encode_many(batch, now_ms=NOW, retention_ms=WEEK_MS, max_payload_bytes=LIMIT)
    encoded = spec.encode_batch(
        batch, now_ms=NOW, retention_ms=WEEK_MS, max_payload_bytes=LIMIT, document_shard=DAY_SHARDS
    )
    return encoded.rows()


def outcome(encode: Any) -> tuple[Any, ...]:
    """The rows made (with their type), or the error raised, its message and field."""
    try:
        rows = encode()
    except SchedulerError as exc:
        return ("error", type(exc).__name__, str(exc), getattr(exc, "field", None))
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))
    return ("rows", [(type(r), *r) for r in rows])


@settings(max_examples=500, deadline=None)
@given(batches(), st.booleans())
def test_encode_many_gives_what_encoding_one_by_one_gives(
    case: tuple[EntitySpec[Any, Any], list[Any]], document: bool
) -> None:
    spec, batch = case
    expected = outcome(lambda: one_by_one(spec, batch))
    assert outcome(lambda: in_bulk(spec, batch, document)) == expected


def flawed_batches() -> list[Any]:
    """Every flaw of KINDS alone, in the middle of good entities, and every stranger class."""
    cases = []
    for kind in KINDS:
        good = [kind.keys[0], GOOD_TIMES[0], kind.values[0]]
        flaws = [("id", 0, kind.bad_keys), ("time", 1, BAD_TIMES), ("value", 2, kind.bad_values)]
        for name, at, bad_values in flaws:
            for n, bad in enumerate(bad_values):
                parts = [*good[:at], bad, *good[at + 1 :]]
                batch = [kind.make(*good), kind.make(*parts), kind.make(*good)]
                cases.append(pytest.param(kind.spec, batch, id=f"{kind.spec.name}-{name}-{n}"))
        for n, stranger in enumerate(kind.strangers):
            batch = [kind.make(*good), stranger(*good)]
            cases.append(pytest.param(kind.spec, batch, id=f"{kind.spec.name}-class-{n}"))
    return cases


@pytest.mark.parametrize("document", [False, True], ids=["payloads", "document"])
@pytest.mark.parametrize(("spec", "batch"), flawed_batches())
def test_each_flaw_is_met_as_encoding_one_by_one_meets_it(
    spec: EntitySpec[Any, Any], batch: list[Any], document: bool
) -> None:
    expected = outcome(lambda: one_by_one(spec, batch))
    assert outcome(lambda: in_bulk(spec, batch, document)) == expected


@pytest.mark.parametrize(
    ("spec", "batch"),
    [
        (
            SMS,
            [
                SmsEntity(id=k, scheduled_at=GOOD_TIMES[k % 3], phone="+1", message=t)
                for k, t in enumerate(TEXTS)
            ],
        ),
        (
            ORDERS,
            [OrderEntity(order_id="o-1", expires_at=GOOD_TIMES[0], customer_id=1, amount_cents=5)],
        ),
        (PYDANTIC, [PydanticJob(id=1, scheduled_at=GOOD_TIMES[1], note="n", due=GOOD_TIMES[2])]),
    ],
)
def test_the_usual_batch_is_encoded_in_bulk_to_the_same_bytes(
    spec: EntitySpec[Any, Any], batch: list[Any]
) -> None:
    encoded = spec._bulk.encode(batch, document_shard=None)
    assert encoded is not None  # else the property above tests the careful path only
    as_document = spec._bulk.encode(batch, document_shard=DAY_SHARDS)
    assert as_document is not None and as_document.document is not None
    # the document is the rows JSON_TABLE reads: [key, at_ms, payload], payloads as written
    assert orjson.loads(as_document.document) == [
        [key, at_ms, orjson.loads(payload)]
        for key, at_ms, payload in zip(encoded.keys, encoded.at_ms, encoded.payloads, strict=True)
    ]
    assert as_document.rows() == encoded.rows()
    rows = encoded.rows()
    assert rows == [spec.encode(e) for e in batch]
    assert all(type(r) is EncodedRow for r in rows)
    for row, entity in zip(rows, batch, strict=True):  # and today's decode reads them
        decoded = spec.decode(*row[:3])
        assert all(getattr(decoded, f) == getattr(entity, f) for f in spec.payload_fields)


def test_payload_dicts_of_fields_that_cannot_be_attributes_in_code_are_made_all_the_same() -> None:
    @dataclass(frozen=True)
    class Odd:
        note: str

    odd = Odd(note="n")
    object.__setattr__(odd, "class", "c")  # a pydantic model may name a field so (an alias)
    object.__setattr__(odd, "ﬁle", "f")  # not "file", which is what Python code would read
    assert _values_getter(("note", "class"))(odd) == {"note": "n", "class": "c"}
    assert _values_getter(("note", "ﬁle"))(odd) == {"note": "n", "ﬁle": "f"}
    assert _values_getter(("note",))(odd) == {"note": "n"}
    assert _values_getter(())(odd) == {}


def test_a_batch_holds_the_rows_a_column_at_a_time_and_gives_them_back() -> None:
    rows = [EncodedRow(3, 30, b"c"), EncodedRow(1, 10, b"a"), EncodedRow(2, 20, b"b")]
    batch = EncodedBatch.of_rows(rows)
    assert (batch.keys, batch.at_ms, batch.payloads) == (
        [3, 1, 2],
        [30, 10, 20],
        [b"c", b"a", b"b"],
    )
    assert batch.rows() == rows and all(type(r) is EncodedRow for r in batch.rows())
    assert len(batch) == 3 and len(EncodedBatch.of_rows([])) == 0
    assert batch[1:].rows() == rows[1:] and batch[:1].rows() == rows[:1]
    assert batch[0:3] is batch and batch[:] is batch  # the whole of it is not copied
    assert [part.rows() for part in chunks(batch, 2)] == [rows[:2], rows[2:]]


def test_a_batch_splits_by_shard_oldest_first_keeping_its_order() -> None:
    day = Granularity.DAY.span_ms
    rows = [EncodedRow(1, NOW + day, b"x"), EncodedRow(2, NOW, b"y"), EncodedRow(3, NOW + 1, b"z")]
    groups = EncodedBatch.of_rows(rows).by_shard(Granularity.DAY)
    assert [b.start_ms for b in groups] == [
        bucket_of(NOW, Granularity.DAY),
        bucket_of(NOW + day, Granularity.DAY),
    ]
    assert [g.rows() for g in groups.values()] == [rows[1:], rows[:1]]
    one = EncodedBatch.of_rows(rows[1:])
    assert list(one.by_shard(Granularity.DAY).values()) == [one]
    assert EncodedBatch.of_rows([]).by_shard(Granularity.DAY) == {}


def long_batches() -> list[Any]:
    """Batches of several DICTS_AT_ONCE: good, or with a flaw in a later slice of dicts."""
    n = 3 * DICTS_AT_ONCE
    sms_jobs = [
        SmsEntity(id=k, scheduled_at=GOOD_TIMES[0], phone="+1", message="m") for k in range(n)
    ]
    orders = [
        OrderEntity(order_id=f"o-{k}", expires_at=GOOD_TIMES[0], customer_id=1, amount_cents=5)
        for k in range(n)
    ]
    orders[-2] = OrderEntity(
        order_id="o-x",
        expires_at=GOOD_TIMES[0],
        customer_id=1,
        amount_cents=5,
        created_at=BAD_TIMES[1],  # naive
    )
    notes = [
        NotificationEntity(id=k, deliver_at=GOOD_TIMES[0], user_id=3, title="t") for k in range(n)
    ]
    notes[2 * DICTS_AT_ONCE + 1] = NotificationEntity(
        id=1, deliver_at=GOOD_TIMES[0], user_id=3, title="t", data={"s": {1}}
    )
    return [
        pytest.param(SMS, sms_jobs, id="good"),
        pytest.param(ORDERS, orders, id="naive-late"),
        pytest.param(NOTIFICATIONS, notes, id="unserialisable-late"),
    ]


@pytest.mark.parametrize(("spec", "batch"), long_batches())
def test_a_batch_of_several_slices_of_dicts_is_met_as_encoding_one_by_one_meets_it(
    spec: EntitySpec[Any, Any], batch: list[Any]
) -> None:
    expected = outcome(lambda: one_by_one(spec, batch))
    for document in (False, True):
        assert outcome(lambda: in_bulk(spec, batch, document)) == expected  # noqa: B023
        span = DAY_SHARDS if document else None
        in_one_go = spec._bulk.encode(batch, document_shard=span) is not None
        assert in_one_go == (expected[0] == "rows")  # good: in bulk


@pytest.mark.parametrize("document", [False, True], ids=["payloads", "document"])
def test_encoding_a_batch_sets_off_no_garbage_collection(document: bool) -> None:
    """Its payload dicts (and a document's row tuples) are freed a few hundred at a time,
    before the collector's count of new containers reaches its threshold (DICTS_AT_ONCE)."""
    batch = [
        SmsEntity(id=k, scheduled_at=GOOD_TIMES[0], phone="+1", message="m") for k in range(2000)
    ]
    passes: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            passes.append(info["generation"])

    threshold = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    gc.collect()
    gc.callbacks.append(count)
    try:
        # a document longer than the limit is cut into payloads to check each (the rare
        # setting): a limit it stays under, as the default of 1 MiB is for the usual batch
        SMS.encode_batch(
            batch,
            now_ms=NOW,
            retention_ms=WEEK_MS,
            max_payload_bytes=1 << 20,
            document_shard=DAY_SHARDS if document else None,
        )
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*threshold)
    assert passes == []


def test_a_batch_over_two_shards_gets_its_payloads_not_a_document() -> None:
    """A document is one statement's rows, one shard's: rows over two are encoded as payloads
    (cutting them out of a document later cost a read and a write of each)."""
    batch = [
        SmsEntity(id=1, scheduled_at=GOOD_TIMES[0], phone="+1", message="a"),
        SmsEntity(id=2, scheduled_at=GOOD_TIMES[0] + timedelta(days=1), phone="+1", message="b"),
    ]
    limits = {"now_ms": NOW, "retention_ms": WEEK_MS, "max_payload_bytes": LIMIT}
    spread = SMS.encode_batch(batch, document_shard=DAY_SHARDS, **limits)
    one_shard = SMS.encode_batch(batch[:1], document_shard=DAY_SHARDS, **limits)
    assert spread.document is None and one_shard.document is not None
    assert spread.rows() == [SMS.encode(e) for e in batch]
