"""Everything that guards what reaches SQL, without a database: identifiers, entity specs,
shard math and store URLs. A name or timestamp wrong here is wrong in every adapter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from repos.entity import EntitySpec
from repos.errors import EntitySpecError, InvalidIdentifier, ShardExpired
from repos.examples import SMS, SmsEntity
from repos.shards import (
    MAX_IDENTIFIER,
    MAX_PREFIX,
    Granularity,
    ShardBounds,
    bounds_of,
    bucket_of,
    check_identifier,
    group_by_shard,
    parse_suffix,
    shards_between,
)
from repos.urls import HostPort, MysqlUrl, SqliteUrl, parse_store_url

DAY = Granularity.DAY
HOUR = Granularity.HOUR
D22 = int(datetime(2026, 11, 22, tzinfo=UTC).timestamp() * 1000)
D23 = D22 + DAY.span_ms


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


# -- check_identifier -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["sms; DROP TABLE x", "SMS", "Sms", "1sms", "sms-x", "sms x", "sms`", "", "é"],
)
def test_check_identifier_rejects_what_could_break_sql(value: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        check_identifier("table prefix", value)
    assert caught.value.value == value
    assert str(caught.value) == (
        f"invalid table prefix {value!r}: must be lowercase letters, digits and _, "
        "not starting with a digit, at most 64 characters"
    )


def test_check_identifier_rejects_non_strings() -> None:
    with pytest.raises(InvalidIdentifier):
        check_identifier("table prefix", 42)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["a", "_", "sms_v2", "a" * MAX_PREFIX, "_0"])
def test_check_identifier_accepts_plain_names_up_to_the_limit(value: str) -> None:
    assert check_identifier("table prefix", value, max_length=MAX_PREFIX) == value


def test_check_identifier_limits_length() -> None:
    assert check_identifier("column", "c" * MAX_IDENTIFIER) == "c" * MAX_IDENTIFIER
    with pytest.raises(InvalidIdentifier):
        check_identifier("column", "c" * (MAX_IDENTIFIER + 1))
    with pytest.raises(InvalidIdentifier):
        check_identifier("table prefix", "p" * (MAX_PREFIX + 1), max_length=MAX_PREFIX)


def test_longest_prefix_still_leaves_room_for_the_hour_suffix() -> None:
    table = f"{'p' * MAX_PREFIX}_{bounds_of(D22, HOUR).suffix}"
    assert check_identifier("shard table", table) == table


# -- EntitySpec.of ----------------------------------------------------------------------------


@dataclass
class Job:
    id: int
    scheduled_at: datetime
    note: str


@dataclass
class StatusJob:
    status: int
    scheduled_at: datetime


@dataclass
class FloatIdJob:
    id: float
    scheduled_at: datetime


@dataclass
class TextTimeJob:
    id: int
    scheduled_at: str


class PydanticJob(BaseModel):
    id: str
    scheduled_at: datetime
    retries: int = 0


@dataclass
class IdJob:
    Id: int
    scheduled_at: datetime


class PlainJob:
    id: int
    scheduled_at: datetime


def _spec_error(model: type[Any], **kwargs: Any) -> EntitySpecError:
    with pytest.raises(EntitySpecError) as caught:
        EntitySpec.of(model, **{"name": "job", **kwargs})
    return caught.value


def test_spec_of_dataclass_and_pydantic_model() -> None:
    spec = EntitySpec.of(Job, name="job")
    assert (spec.key_type, spec.table_prefix, spec.payload_fields) == (int, "job", ("note",))
    model_spec = EntitySpec.of(PydanticJob, name="pjob", table_prefix="p_jobs")
    assert (model_spec.key_type, model_spec.table_prefix) == (str, "p_jobs")


def test_spec_rejects_id_field_that_is_not_a_field() -> None:
    error = _spec_error(Job, id_field="job_id")
    assert error.field == "job_id"
    assert "not a field of Job" in str(error)


def test_spec_rejects_a_field_named_like_an_engine_column() -> None:
    error = _spec_error(StatusJob, id_field="status")
    assert error.field == "status"
    assert "reserved" in str(error)


@pytest.mark.parametrize("table", ["nodes", "leases"])
@pytest.mark.parametrize("key", ["name", "table_prefix"])
def test_spec_rejects_the_name_of_the_stores_own_table(key: str, table: str) -> None:
    """A partitioned entity's table is named by its prefix: ``nodes`` is the membership's,
    ``leases`` the chores' runner's."""
    error = _spec_error(Job, **{key: table})
    assert f"table prefix '{table}' is reserved: the store's own table has that name" in str(error)


def test_spec_rejects_float_id() -> None:
    error = _spec_error(FloatIdJob)
    assert error.field == "id"
    assert "int or str" in str(error)


def test_spec_rejects_sharding_time_not_typed_datetime() -> None:
    error = _spec_error(TextTimeJob)
    assert error.field == "scheduled_at"
    assert "datetime" in str(error)


def test_spec_rejects_neither_dataclass_nor_pydantic_model() -> None:
    error = _spec_error(PlainJob)
    assert "neither a dataclass nor a pydantic model" in str(error)


RULE = "must be lowercase letters, digits and _, not starting with a digit, at most"


@pytest.mark.parametrize(
    ("kwargs", "bad", "message"),
    [
        ({"name": "SMS-1"}, "SMS-1", f"invalid entity name 'SMS-1': {RULE} 64 characters"),
        (
            {"name": "job", "table_prefix": "jobs; DROP TABLE x"},
            "jobs; DROP TABLE x",
            f"entity 'job': invalid table prefix 'jobs; DROP TABLE x': {RULE} 53 characters",
        ),
        (
            {"name": "job", "table_prefix": "j" * (MAX_PREFIX + 1)},
            "j" * (MAX_PREFIX + 1),
            f"entity 'job': invalid table prefix '{'j' * 54}': {RULE} 53 characters",
        ),
        (
            {"name": "job", "id_field": "Id"},
            "Id",
            f"entity 'job': invalid id column 'Id': {RULE} 64 characters",
        ),
    ],
)
def test_spec_rejects_bad_names_and_prefixes(
    kwargs: dict[str, Any], bad: str, message: str
) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        EntitySpec.of(IdJob if "id_field" in kwargs else Job, **kwargs)
    assert caught.value.value == bad
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("retention_ms", "horizon", "retention"),
    [
        (36 * 3_600_000, "2026-11-21T00:00:00.000Z", "36 hours, 129600 s"),
        (60_000, "2026-11-22T11:59:00.000Z", "1 minute, 60 s"),
        (1_500, "2026-11-22T11:59:58.500Z", "1.5 s"),
    ],
)
def test_shard_expired_shows_utc_times_and_the_retention(
    retention_ms: int, horizon: str, retention: str
) -> None:
    now_ms = D22 + 12 * 3_600_000
    job = SmsEntity(
        id=7, scheduled_at=datetime(2000, 1, 2, 3, 4, 5, 6_000, tzinfo=UTC), phone="+1", message="m"
    )
    with pytest.raises(ShardExpired) as caught:
        SMS.encode_many([job], now_ms=now_ms, retention_ms=retention_ms, max_payload_bytes=2**20)
    assert str(caught.value) == (
        "entity 'sms', job 7, field 'scheduled_at': time 2000-01-02T03:04:05.006Z is older than "
        f"the retention horizon {horizon} (now minus the retention of {retention}): its shard "
        "is dropped, so it would never fire"
    )


# -- shard math -------------------------------------------------------------------------------


def test_bucket_of_splits_exactly_at_midnight_utc() -> None:
    assert bucket_of(D23 - 1, DAY) == D22
    assert bucket_of(D23, DAY) == D23
    assert bucket_of(D22 + 3_600_000 * 14 - 1, HOUR) == D22 + 3_600_000 * 13


def test_bounds_of_names_and_limits_a_shard() -> None:
    assert bounds_of(D23 - 1, DAY) == ShardBounds(suffix="20261122", start_ms=D22, end_ms=D23)
    last_hour = ms(datetime(2026, 11, 22, 23, tzinfo=UTC))
    assert bounds_of(D23 - 1, HOUR) == ShardBounds(
        suffix="2026112223", start_ms=last_hour, end_ms=D23
    )
    assert bounds_of(D23, HOUR).suffix == "2026112300"


@pytest.mark.parametrize(
    ("suffix", "granularity", "start"),
    [
        ("20261122", DAY, datetime(2026, 11, 22, tzinfo=UTC)),
        ("20241229", DAY, datetime(2024, 12, 29, tzinfo=UTC)),
        ("2026112213", HOUR, datetime(2026, 11, 22, 13, tzinfo=UTC)),
        ("2026112300", HOUR, datetime(2026, 11, 23, tzinfo=UTC)),
    ],
)
def test_parse_suffix_inverts_bounds_of(
    suffix: str, granularity: Granularity, start: datetime
) -> None:
    bounds = parse_suffix(suffix, granularity)
    assert bounds == bounds_of(ms(start), granularity)
    assert bounds is not None and bounds.suffix == suffix


@pytest.mark.parametrize(
    ("suffix", "granularity"),
    [
        ("2026133", DAY),  # 7 digits
        ("20261332", DAY),  # month 13
        ("20261131", DAY),  # 31 November
        ("abc", DAY),
        ("2026112a", DAY),
        ("2026112213", DAY),  # an hour suffix under day granularity
        ("20261122", HOUR),
        ("2026112224", HOUR),  # hour 24
        ("", DAY),
    ],
)
def test_parse_suffix_rejects_junk(suffix: str, granularity: Granularity) -> None:
    assert parse_suffix(suffix, granularity) is None


def test_shards_between_is_half_open_and_overlapping() -> None:
    assert [b.start_ms for b in shards_between(D22, D23, DAY)] == [D22]
    assert [b.start_ms for b in shards_between(D22, D23 + 1, DAY)] == [D22, D23]
    assert [b.start_ms for b in shards_between(D23 - 1, D23 + 1, DAY)] == [D22, D23]
    week = shards_between(D22 + 5, D22 + 7 * DAY.span_ms, DAY)
    assert [b.suffix for b in week] == [f"202611{d}" for d in range(22, 29)]
    hours = shards_between(D23 - 1, D23 + 3_600_000, HOUR)
    assert [b.suffix for b in hours] == ["2026112223", "2026112300"]


def test_group_by_shard_splits_at_the_boundary_oldest_first_keeping_order() -> None:
    times = [D23 + 5, D22 + 1, D23 - 1, D23, D22]
    groups = group_by_shard(times, lambda t: t, DAY)
    assert [(b.suffix, items) for b, items in groups.items()] == [
        ("20261122", [D22 + 1, D23 - 1, D22]),
        ("20261123", [D23 + 5, D23]),
    ]
    assert list(groups) == shards_between(D22, D23 + 1, DAY)
    by_hour = group_by_shard([D23 - 1, D23], lambda t: t, HOUR)
    assert [b.suffix for b in by_hour] == ["2026112223", "2026112300"]
    assert group_by_shard([], lambda t: t, DAY) == {}
    one_shard = group_by_shard(iter([D22 + 9, D22, D23 - 1]), lambda t: t, DAY)
    assert [(b.suffix, items) for b, items in one_shard.items()] == [
        ("20261122", [D22 + 9, D22, D23 - 1])
    ]


def test_shards_between_walks_across_month_and_year_ends() -> None:
    start = ms(datetime(2026, 12, 31, tzinfo=UTC))
    suffixes = [b.suffix for b in shards_between(start, start + 2 * DAY.span_ms, DAY)]
    assert suffixes == ["20261231", "20270101"]
    feb = ms(datetime(2028, 2, 28, tzinfo=UTC))
    leap = [b.suffix for b in shards_between(feb, feb + 2 * DAY.span_ms, DAY)]
    assert leap == ["20280228", "20280229"]


def test_boundary_timestamps_from_datetimes_are_exact() -> None:
    """Epoch-ms conversion through float must not lose the last millisecond of a day."""
    last = datetime(2026, 11, 22, 23, 59, 59, 999_000, tzinfo=UTC)
    assert ms(last) == D23 - 1
    assert ms(last + timedelta(milliseconds=1)) == D23


# -- store URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        (
            "mysql://root@127.0.0.1:3306/jobs",
            MysqlUrl(host="127.0.0.1", port=3306, user="root", database="jobs"),
        ),
        ("mysql://app@db/jobs", MysqlUrl(host="db", port=3306, user="app", database="jobs")),
        (
            "mariadb://app:p%40ss@db:3307/jobs_2",
            MysqlUrl(host="db", port=3307, user="app", database="jobs_2", password="p@ss"),
        ),
        ("sqlite:///relative/store.db", SqliteUrl(path="relative/store.db")),
        ("sqlite:////var/lib/store.db", SqliteUrl(path="/var/lib/store.db")),
        (
            "mysql://app:pw@g1:3311,g2,g3:3313/jobs",
            MysqlUrl(
                host="g1",
                port=3311,
                user="app",
                database="jobs",
                password="pw",
                hosts=(HostPort("g1", 3311), HostPort("g2", 3306), HostPort("g3", 3313)),
            ),
        ),
    ],
)
def test_parse_store_url_accepts(url: str, parsed: MysqlUrl | SqliteUrl) -> None:
    assert parse_store_url(url) == parsed


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://root@db/jobs", "unknown scheme 'postgres'"),
        ("db.example/jobs", "unknown scheme ''"),
        ("mysql://root@db", "database are required"),
        ("mysql://root@db/", "database are required"),
        ("mysql://db/jobs", "user and database are required"),
        ("mysql://root@db:port/jobs", "port is not a number"),
        ("mysql://root@db:70000/jobs", "port is not a number"),
        ("sqlite://", "sqlite URL has no path"),
        ("sqlite:///", "sqlite URL has no path"),
        ("mysql://root@g1,,g3/jobs", "host 2 of 'g1,,g3': host name is empty"),
        ("mysql://root@g1,/jobs", "host 2 of 'g1,': host name is empty"),
        ("mysql://root@g1,g2:x/jobs", "host 2 of 'g1,g2:x': port is not a number"),
        ("mysql://root@g1:3306,g1/jobs", "host 2 of 'g1:3306,g1': g1:3306 is listed twice"),
    ],
)
def test_parse_store_url_rejects_with_value_error(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_store_url(url)
    assert "expected sqlite:///PATH or mysql://" in str(caught.value)


@pytest.mark.parametrize("database", ["bad-name", "Jobs", "jobs;drop"])
def test_parse_store_url_rejects_bad_database_name_as_invalid_identifier(database: str) -> None:
    """Not a ValueError: the database name goes through the same guard as every identifier."""
    with pytest.raises(InvalidIdentifier) as caught:
        parse_store_url(f"mysql://root@db/{database}")
    assert caught.value.value == database
    assert str(caught.value) == f"invalid database name {database!r}: {RULE} 64 characters"


def test_mysql_url_keeps_the_password_out_of_repr() -> None:
    url = parse_store_url("mysql://app:hunter2-s3cret@db:3307/jobs")
    assert isinstance(url, MysqlUrl)
    assert url.password == "hunter2-s3cret"
    assert url.address == "db:3307"
    assert "hunter2" not in repr(url) and "hunter2" not in str(url)


def test_multi_host_url_names_every_host_and_keeps_the_first_as_host() -> None:
    url = parse_store_url("mysql://app:hunter2@g1:3311,g2:3312/jobs")
    assert isinstance(url, MysqlUrl)
    assert (url.host, url.port) == ("g1", 3311)
    assert url.address == "g1:3311,g2:3312"
    assert [h.address for h in url.hosts] == ["g1:3311", "g2:3312"]
    with pytest.raises(ValueError, match="host 2 of 'g1,g2:x'") as caught:
        parse_store_url("mysql://app:hunter2@g1,g2:x/jobs")
    assert "hunter2" not in str(caught.value)
