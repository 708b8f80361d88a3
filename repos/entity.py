"""Entity specs: how a user's dataclass or pydantic model maps to a shard row.

A row keeps two of the entity's fields as real columns, its id and its sharding time (stored as
epoch milliseconds), and the other fields as one orjson document in ``payload``. One payload
column keeps the claim narrow, lets the wheel hold raw bytes until fire time, and lets a user
add fields without a schema change.
"""

from __future__ import annotations

import dataclasses
import keyword
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timezone
from itertools import repeat
from operator import attrgetter, itemgetter, mul
from typing import Any, Generic, NamedTuple, TypeVar

import orjson
from pydantic import BaseModel

from repos.cluster import LEASES_TABLE, NODES_TABLE, REVOCATIONS_TABLE
from repos.dependencies import DEPENDENCIES_TABLE
from repos.errors import EntitySpecError, PayloadTooLarge, ShardExpired
from repos.history import HISTORY_TABLE
from repos.options import DEFAULT_PRIORITY
from repos.schedules import BLOCKOUTS_TABLE, SCHEDULES_TABLE
from repos.shards import (
    MAX_PREFIX,
    Granularity,
    ShardBounds,
    bounds_of,
    bucket_of,
    check_identifier,
    group_by_shard,
)

TEntity = TypeVar("TEntity")
TKey = TypeVar("TKey", bound=int | str)

#: Tables of the store itself (repos/cluster.py), which no entity's may be.
STORE_TABLES = frozenset(
    {
        NODES_TABLE,
        LEASES_TABLE,
        REVOCATIONS_TABLE,
        DEPENDENCIES_TABLE,
        SCHEDULES_TABLE,
        BLOCKOUTS_TABLE,
        HISTORY_TABLE,
    }
)
#: Columns the engine owns; an entity may not map a field onto them.
ENGINE_COLUMNS = frozenset(
    {
        "payload",
        "status",
        "due_at",
        "attempts",
        "claimed_by",
        "claimed_at",
        "fired_at",
        "last_error",
        "priority",
        "category",
    }
)
MAX_STR_ID = 191
#: Default cap on one entity's encoded payload (``store.max_payload_bytes``).
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 20
#: The highest cap any store takes: MySQL keeps payloads in a MEDIUMBLOB.
PAYLOAD_BYTES_CEILING = (1 << 24) - 1
_BIGINT = 2**63
#: Goes between the payloads of a batch dumped as one orjson array (orjson.Fragment: written
#: verbatim): a NUL orjson never writes itself, as it escapes control characters in strings.
_SEPARATOR = orjson.Fragment(b"\x00")
_BETWEEN = b",\x00,"
#: Payload dicts made, dumped and freed at a time. The collector counts the containers made
#: less those freed and runs a pass once the count passes 700 (gc.get_threshold()), every
#: tenth pass one over older objects and in time the full one: a thousand dicts alive at once
#: set off a pass per insert, and the full pass came round within W1 (20 ms over the
#: producer's 100,000 entities; W1 client CPU 1.65 -> 1.45 us/job without). Freed a few
#: hundred at a time, they leave the count where they found it.
DICTS_AT_ONCE = 256


class EncodedRow(NamedTuple):
    """An entity as the adapters store it (a tuple: ingest builds one per job, W1 100k/s), with
    the job's priority and category (infinite_scheduler/job.py)."""

    key: int | str
    at_ms: int
    payload: bytes
    priority: int = DEFAULT_PRIORITY
    category: str = ""


class EncodedBatch:
    """Encoded entities a column at a time: what the adapters' inserts work from. Rendering a
    1,000-row insert from three lists is one C pass per column (str, hex) instead of a Python
    step per row, and no tuple is made per row (rows() makes them for those who want them).

    `priorities` and `categories` are None while every row has the defaults (500, no category),
    the usual batch: the inserts then write those as constants, at no cost per row.

    `document`, when the encoder was asked for one (EntitySpec.encode_batch: one shard's
    rows, the default priority and no category, as every batch it makes), is the whole batch as one JSON array of ``[key, at_ms, payload]`` rows, made by
    the orjson calls that would have made the payloads: the MySQL adapter inserts it as one
    literal, where the payloads one by one cost a split, a hex literal and two numbers
    rendered per row. The payloads are then cut out of it only if something asks for them (a
    duplicate to name, a payload limit below the batch's bytes), and are the bytes the
    encoder would have made without it.
    """

    __slots__ = ("_payloads", "at_ms", "categories", "document", "keys", "priorities")

    def __init__(
        self,
        keys: list[int | str],
        at_ms: list[int],
        payloads: list[bytes] | None,
        priorities: list[int] | None = None,
        categories: list[str] | None = None,
        *,
        document: bytes | None = None,
    ) -> None:
        if payloads is None and document is None:
            raise ValueError("an encoded batch needs its payloads or its document")
        self.keys = keys
        self.at_ms = at_ms
        self._payloads = payloads
        self.priorities = priorities
        self.categories = categories
        self.document = document

    @property
    def payloads(self) -> list[bytes]:
        if self._payloads is None:
            assert self.document is not None  # one of the two, always (__init__)
            self._payloads = _payloads_of(self.document)
        return self._payloads

    def largest_payload_within(self, limit: int) -> bool:
        """Whether no payload is longer than `limit` bytes. A document no longer than that
        answers without cutting the payloads out of it: the usual batch under the default
        limit (1 MiB); a limit below a batch's bytes costs the cut."""
        if self.document is not None and len(self.document) <= limit:
            return True
        return not self.keys or max(map(len, self.payloads)) <= limit

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def of_rows(cls, rows: Sequence[EncodedRow]) -> EncodedBatch:
        if not rows:
            return cls([], [], [])
        keys, at_ms, payloads, priorities, categories = zip(*rows, strict=True)
        if set(priorities) == {DEFAULT_PRIORITY} and set(categories) == {""}:
            return cls(list(keys), list(at_ms), list(payloads))
        return cls(list(keys), list(at_ms), list(payloads), list(priorities), list(categories))

    def rows(self) -> list[EncodedRow]:
        # tuple.__new__ straight: EncodedRow(...) runs a Python __new__ for each row.
        n = len(self.keys)
        columns = zip(
            self.keys,
            self.at_ms,
            self.payloads,
            self.priorities or repeat(DEFAULT_PRIORITY, n),
            self.categories or repeat("", n),
            strict=True,
        )
        return list(map(tuple.__new__, repeat(EncodedRow), columns))

    def __getitem__(self, span: slice) -> EncodedBatch:
        """The rows of `span` (the batch itself when that is all of it), for chunks()."""
        start, stop, step = span.indices(len(self.keys))
        if (start, stop, step) == (0, len(self.keys), 1):
            return self
        if self.priorities is None or self.categories is None:
            return EncodedBatch(self.keys[span], self.at_ms[span], self.payloads[span])
        return EncodedBatch(
            self.keys[span],
            self.at_ms[span],
            self.payloads[span],
            self.priorities[span],
            self.categories[span],
        )

    def by_shard(self, granularity: Granularity) -> dict[ShardBounds, EncodedBatch]:
        """The rows grouped by the shard their time falls in, oldest shard first, in order."""
        if not self.keys:
            return {}
        first, last = min(self.at_ms), max(self.at_ms)
        if bucket_of(first, granularity) == bucket_of(last, granularity):  # the usual batch
            return {bounds_of(first, granularity): self}
        groups = group_by_shard(self.rows(), _AT_MS, granularity)
        return {bounds: EncodedBatch.of_rows(rows) for bounds, rows in groups.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class EntitySpec(Generic[TEntity, TKey]):
    """Maps one entity type to shard rows.

    `name` names the type in logs and metrics and, by default, prefixes its shard tables.
    Build it with :meth:`of`, which checks the model and every identifier once.
    """

    name: str
    model: type[TEntity]
    id_field: str
    time_field: str
    key_type: type[TKey]
    table_prefix: str
    payload_fields: tuple[str, ...]
    datetime_fields: frozenset[str] = field(default_factory=frozenset)
    _bulk: _Bulk = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_bulk", _Bulk(self))

    @classmethod
    def of(
        cls,
        model: type[TEntity],
        *,
        name: str,
        id_field: str = "id",
        time_field: str = "scheduled_at",
        table_prefix: str | None = None,
    ) -> EntitySpec[TEntity, Any]:
        check_identifier("entity name", name)
        prefix = check_identifier(
            "table prefix", table_prefix or name, max_length=MAX_PREFIX, entity=name
        )
        if prefix in STORE_TABLES:
            # The partitioned layout names an entity's one table by its prefix.
            raise EntitySpecError(
                name, f"table prefix {prefix!r} is reserved: the store's own table has that name"
            )
        hints = _field_types(model, name)
        for role, fname in (("id", id_field), ("sharding time", time_field)):
            if fname not in hints:
                raise EntitySpecError(
                    name, f"{role} field is not a field of {model.__name__}", field=fname
                )
            check_identifier(f"{role} column", fname, entity=name)
            if fname in ENGINE_COLUMNS:
                raise EntitySpecError(name, "name is reserved for an engine column", field=fname)
        key_type = _key_type(hints[id_field], name, id_field)
        if _strip_optional(hints[time_field]) is not datetime:
            raise EntitySpecError(name, "sharding time must be typed datetime", field=time_field)
        rest = tuple(f for f in hints if f not in (id_field, time_field))
        return cls(
            name=name,
            model=model,
            id_field=id_field,
            time_field=time_field,
            key_type=key_type,
            table_prefix=prefix,
            payload_fields=rest,
            datetime_fields=frozenset(f for f in rest if _strip_optional(hints[f]) is datetime),
        )

    def key_of(self, entity: TEntity) -> TKey:
        return typing.cast(TKey, self._check_key(getattr(entity, self.id_field, None)))

    def check_keys(self, keys: Sequence[object]) -> list[TKey]:
        """Ids given to an API call (cancel): each of the id field's type, or EntitySpecError."""
        return [typing.cast(TKey, self._check_key(key)) for key in keys]

    def encode(self, entity: TEntity) -> EncodedRow:
        """Check one entity and turn it into a row; raises EntitySpecError naming the field."""
        if not isinstance(entity, self.model):
            raise EntitySpecError(
                self.name, f"expected {self.model.__name__}, got {type(entity).__name__}"
            )
        key = self._check_key(getattr(entity, self.id_field, None))
        at = getattr(entity, self.time_field, None)
        at_ms = self._check_time(at, key, self.time_field)
        values = {f: getattr(entity, f) for f in self.payload_fields}
        for fname in self.datetime_fields:
            if values[fname] is not None:
                self._check_time(values[fname], key, fname)
        return EncodedRow(key, at_ms, self._dump(values, key))

    def encode_many(
        self,
        entities: Sequence[TEntity],
        *,
        now_ms: int,
        retention_ms: int,
        max_payload_bytes: int,
    ) -> list[EncodedRow]:
        """encode_batch's rows, one EncodedRow each."""
        return self.encode_batch(
            entities, now_ms=now_ms, retention_ms=retention_ms, max_payload_bytes=max_payload_bytes
        ).rows()

    def encode_batch(
        self,
        entities: Sequence[TEntity],
        *,
        now_ms: int,
        retention_ms: int,
        max_payload_bytes: int,
        document_shard: Granularity | None = None,
    ) -> EncodedBatch:
        """Encode a whole insert before any of it is written. Sharding times older than now
        minus retention raise ShardExpired, as such rows would never fire; payloads over
        `max_payload_bytes` raise PayloadTooLarge, as the store would refuse them mid-insert.
        `document_shard`: make the batch's document (EncodedBatch) if it is the usual batch
        and its rows all fall in one shard of this granularity (an adapter that inserts from
        documents writes one shard's rows a statement)."""
        batch = self._bulk.encode(entities, document_shard=document_shard)
        if batch is None:
            batch = EncodedBatch.of_rows([self.encode(e) for e in entities])
        self.check_batch(
            batch, now_ms=now_ms, retention_ms=retention_ms, max_payload_bytes=max_payload_bytes
        )
        return batch

    def check_batch(
        self, batch: EncodedBatch, *, now_ms: int, retention_ms: int, max_payload_bytes: int
    ) -> None:
        """encode_batch's checks of rows encoded already (a schedule's occurrences store its
        template's payload as it is): ShardExpired or PayloadTooLarge for the first row in the
        way, in order."""
        horizon_ms = now_ms - retention_ms
        if not batch.keys or (
            min(batch.at_ms) >= horizon_ms and batch.largest_payload_within(max_payload_bytes)
        ):
            return
        for key, at_ms, payload in zip(batch.keys, batch.at_ms, batch.payloads, strict=True):
            if at_ms < horizon_ms:  # the first row in the way, in order
                raise ShardExpired(
                    self.name,
                    key,
                    self.time_field,
                    at_ms,
                    now_ms=now_ms,
                    retention_ms=retention_ms,
                )
            if len(payload) > max_payload_bytes:
                raise PayloadTooLarge(self.name, key, len(payload), max_payload_bytes)

    def decode(self, key: int | str, at_ms: int, payload: bytes) -> TEntity:
        """Rebuild the entity from its stored row (done lazily, at fire time)."""
        values: dict[str, Any] = orjson.loads(payload)
        for fname in self.datetime_fields:
            if values.get(fname) is not None:
                values[fname] = datetime.fromisoformat(values[fname])
        values[self.id_field] = key
        values[self.time_field] = datetime.fromtimestamp(at_ms / 1000, UTC)
        if issubclass(self.model, BaseModel):
            return typing.cast(TEntity, self.model.model_validate(values))
        return self.model(**values)

    def _check_key(self, key: object) -> int | str:
        if key is None:
            raise EntitySpecError(self.name, "id is missing", field=self.id_field)
        if self.key_type is int:
            if type(key) is not int or not -_BIGINT <= key < _BIGINT:
                raise EntitySpecError(
                    self.name, f"id must be a 64-bit int, got {key!r}", field=self.id_field
                )
        elif not isinstance(key, str) or not 0 < len(key) <= MAX_STR_ID:
            raise EntitySpecError(
                self.name,
                f"id must be a str of 1..{MAX_STR_ID} chars, got {key!r}",
                field=self.id_field,
            )
        return key

    def _check_time(self, at: object, key: object, fname: str) -> int:
        if at is None:
            raise EntitySpecError(self.name, "time is missing", field=fname, job_id=key)
        if not isinstance(at, datetime):
            raise EntitySpecError(
                self.name, f"expected a datetime, got {at!r}", field=fname, job_id=key
            )
        if at.tzinfo is None or at.utcoffset() is None:
            raise EntitySpecError(
                self.name, "naive datetime: give it a timezone (UTC)", field=fname, job_id=key
            )
        return int(at.timestamp() * 1000)

    def _dump(self, values: dict[str, Any], key: object) -> bytes:
        try:
            # orjson builds its bytes in a 1 KiB malloc block; a whole batch of them kept alive
            # touches fresh pages for each (2.6 us per payload here). A copy sized to fit comes
            # from Python's small-object pool and frees the block for the next one (0.4 us).
            return bytes(memoryview(orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)))
        except (TypeError, orjson.JSONEncodeError):
            bad = next(_unserialisable(values), None)
            raise EntitySpecError(
                self.name,
                f"value {values.get(bad)!r} cannot be serialised to JSON"
                if bad
                else "payload cannot be serialised",
                field=bad,
                job_id=key,
            ) from None


class _Bulk:
    """encode_many's way with the usual batch: every entity of the model's own class, valid, its
    datetimes aware, its payload one orjson takes. A column at a time, mostly in C: a third of
    the time of encoding entity by entity (which a batch that is not usual gets, and whose
    errors name the first bad entity, as ever)."""

    def __init__(self, spec: EntitySpec[Any, Any]) -> None:
        self.model = spec.model
        self.key_of = attrgetter(spec.id_field)
        self.time_of = attrgetter(spec.time_field)
        self.values_of = _values_getter(spec.payload_fields)
        self.datetime_fields = tuple(spec.datetime_fields)
        self.int_keys = spec.key_type is int

    def encode(
        self, entities: Sequence[Any], *, document_shard: Granularity | None
    ) -> EncodedBatch | None:
        """The rows EntitySpec.encode would make (as one document if asked and they fall in
        one shard), or None if any entity is unusual."""
        try:
            return self._encode(entities, document_shard)
        except Exception:  # whatever it was, EntitySpec.encode says it of the right entity
            return None

    def _encode(self, entities: Sequence[Any], shard: Granularity | None) -> EncodedBatch | None:
        if set(map(type, entities)) != {self.model}:
            return None
        keys = list(map(self.key_of, entities))
        times = list(map(self.time_of, entities))
        if not (self._keys_valid(keys) and _aware(times)):
            return None
        # int(at.timestamp() * 1000) as encode() reckons it, a C call per step instead of a
        # Python loop: float.__trunc__ is int() of a float.
        at_ms = list(map(float.__trunc__, map(mul, map(datetime.timestamp, times), repeat(1000.0))))
        spans = [slice(i, i + DICTS_AT_ONCE) for i in range(0, len(entities), DICTS_AT_ONCE)]
        if shard is not None and bucket_of(min(at_ms), shard) == bucket_of(max(at_ms), shard):
            pieces: list[Any] = [b"["]
            for span in spans:
                rows = self._rows_json(entities[span], keys[span], at_ms[span])
                if rows is None:
                    return None
                pieces += (rows, b",")
            pieces[-1] = b"]"  # joined once: brackets added to the joined whole copied it twice
            return EncodedBatch(keys, at_ms, None, document=b"".join(pieces))
        payloads: list[bytes] = []
        for span in spans:
            dumped = self._payloads(entities[span])
            if dumped is None:
                return None
            payloads += dumped
        return EncodedBatch(keys, at_ms, payloads)

    def _payloads(self, entities: Sequence[Any]) -> list[bytes] | None:
        values = self._values(entities)
        return None if values is None else _dump_all(values)

    def _rows_json(self, entities: Sequence[Any], keys: list[Any], at_ms: list[int]) -> Any:
        """The ``[key, at_ms, payload]`` rows of `entities`, without the array's brackets (a
        memoryview of orjson's bytes: joined, not copied), or None."""
        values = self._values(entities)
        if values is None:
            return None
        rows = zip(keys, at_ms, values, strict=True)
        dumped = orjson.dumps(list(rows), option=orjson.OPT_SERIALIZE_NUMPY)
        return memoryview(dumped)[1:-1]

    def _values(self, entities: Sequence[Any]) -> list[dict[str, Any]] | None:
        """The payload dicts, or None if a datetime among them has no timezone."""
        values = list(map(self.values_of, entities))
        for fname in self.datetime_fields:
            if not _aware([v for v in map(itemgetter(fname), values) if v is not None]):
                return None
        return values

    def _keys_valid(self, keys: list[Any]) -> bool:
        if self.int_keys:
            return set(map(type, keys)) == {int} and -_BIGINT <= min(keys) and max(keys) < _BIGINT
        if set(map(type, keys)) != {str}:
            return False
        lengths = list(map(len, keys))
        return 0 < min(lengths) and max(lengths) <= MAX_STR_ID


def _aware(times: list[Any]) -> bool:
    """Whether every one is a datetime (not a subclass: encode() judges those) with a UTC
    offset; a fixed-offset timezone (UTC among them) always has one."""
    if not set(map(type, times)) <= {datetime}:
        return False
    zones = set(map(_TZINFO, times))
    return all(type(z) is timezone for z in zones) or all(t.utcoffset() is not None for t in times)


def _dump_all(values: list[dict[str, Any]]) -> list[bytes] | None:
    """The payloads of a batch from one orjson call, which costs less than the call per payload
    did: one array with a separator between them, split again. Each payload comes out of the
    split as a bytes object of its own size (see EntitySpec._dump on why that matters)."""
    parts: list[Any] = [_SEPARATOR] * (2 * len(values) - 1)
    parts[::2] = values
    document = orjson.dumps(parts, option=orjson.OPT_SERIALIZE_NUMPY)
    payloads = document[1:-1].split(_BETWEEN)
    return payloads if len(payloads) == len(values) else None


def _payloads_of(document: bytes) -> list[bytes]:
    """The payloads of an EncodedBatch's document, each as its own dump would be: orjson reads
    back what it wrote as equal values (the numbers, the strings, the order of keys), so
    writing them again gives the same bytes."""
    return [orjson.dumps(row[2]) for row in orjson.loads(document)]


def _values_getter(fields: tuple[str, ...]) -> Callable[[Any], dict[str, Any]]:
    """``lambda e: {"phone": e.phone, ...}``: the payload dict of an entity. A dict display
    builds it in a third of the time of a comprehension over getattr. The names are the
    model's own field names, checked to be plain identifiers before they make up the code (an
    ASCII one: Python reads a name such as "ﬁle" as "file")."""
    if not all(f.isascii() and f.isidentifier() and not keyword.iskeyword(f) for f in fields):
        return lambda entity: {f: getattr(entity, f) for f in fields}
    display = ", ".join(f"{f!r}: e.{f}" for f in fields)
    return typing.cast(Callable[[Any], dict[str, Any]], eval(f"lambda e: {{{display}}}"))


_TZINFO = attrgetter("tzinfo")
_AT_MS = itemgetter(1)


def _unserialisable(values: dict[str, Any]) -> Iterator[str]:
    for fname, value in values.items():
        try:
            orjson.dumps(value)
        except (TypeError, orjson.JSONEncodeError):
            yield fname


def _field_types(model: type[Any], name: str) -> dict[str, Any]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return {f: info.annotation for f, info in model.model_fields.items()}
    if dataclasses.is_dataclass(model) and isinstance(model, type):
        hints = typing.get_type_hints(model)
        return {f.name: hints[f.name] for f in dataclasses.fields(model)}
    raise EntitySpecError(name, f"{model!r} is neither a dataclass nor a pydantic model")


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _key_type(tp: Any, name: str, fname: str) -> type[Any]:
    tp = _strip_optional(tp)
    if tp is int or tp is str:
        return typing.cast(type[Any], tp)
    raise EntitySpecError(name, f"id must be typed int or str, not {tp!r}", field=fname)
