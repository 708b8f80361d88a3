"""Job(entity, priority=, category=): validation, and how schedule() groups a mixed call."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from infinite_scheduler import Job, JobOptionError
from infinite_scheduler.errors import HandlerMissing
from infinite_scheduler.job import group_jobs, with_options
from repos.base import EncodedRow, code_of, priority_of
from repos.examples import OrderEntity, SmsEntity

AT = datetime(2026, 11, 22, 12, tzinfo=UTC)
KNOWN = {SmsEntity: "sms", OrderEntity: "orders"}


def sms(i: int) -> SmsEntity:
    return SmsEntity(id=i, scheduled_at=AT, phone="+1", message="m")


def order(i: int) -> OrderEntity:
    return OrderEntity(order_id=f"o-{i}", expires_at=AT, customer_id=i, amount_cents=1)


@pytest.mark.parametrize("bad", [0, 1001, -5, True, 5.0, "900", None])
def test_a_priority_outside_1_to_1000_is_refused_naming_the_field(bad: object) -> None:
    with pytest.raises(JobOptionError) as caught:
        Job(sms(1), priority=bad)  # type: ignore[arg-type]
    assert caught.value.field == "priority" and caught.value.value == bad
    assert "field 'priority'" in str(caught.value) and "1..1000" in str(caught.value)
    assert "SmsEntity" in str(caught.value)


def test_a_job_has_the_defaults_unless_told() -> None:
    job = Job(sms(1))
    assert (job.priority, job.category, job.options) == (500, "", 0)
    ranked = Job(sms(1), priority=1, category="reports")
    assert priority_of(ranked.options) == 1 and code_of(ranked.options) > 0
    assert Job(sms(1), priority=1000).priority == 1000


def test_a_call_without_a_job_is_grouped_as_before_with_no_options() -> None:
    groups = group_jobs([sms(1), order(1), sms(2)], KNOWN, HandlerMissing, set())
    assert groups == {"sms": ([sms(1), sms(2)], None), "orders": ([order(1)], None)}


def test_jobs_and_entities_mixed_are_grouped_with_their_options_in_order() -> None:
    items = [Job(sms(1), priority=900), order(1), sms(2), Job(order(2), category="reports")]
    groups = group_jobs(items, KNOWN, HandlerMissing, {"reports"})
    assert groups == {
        "sms": ([sms(1), sms(2)], [(900, ""), (500, "")]),
        "orders": ([order(1), order(2)], [(500, ""), (500, "reports")]),
    }
    # Jobs with the defaults only: no options to carry.
    assert group_jobs([Job(sms(1))], KNOWN, HandlerMissing, set()) == {"sms": ([sms(1)], None)}


def test_an_unknown_category_is_refused_naming_the_field_and_the_known_ones() -> None:
    with pytest.raises(JobOptionError) as caught:
        group_jobs([sms(1), Job(sms(2), category="repotrs")], KNOWN, HandlerMissing, {"reports"})
    assert caught.value.field == "category" and caught.value.value == "repotrs"
    assert "'reports'" in str(caught.value) and "[categories.repotrs]" in str(caught.value)


def test_an_unserved_entity_inside_a_job_is_refused_as_any_other() -> None:
    with pytest.raises(HandlerMissing, match="str"):
        group_jobs([Job("not an entity", priority=2)], KNOWN, HandlerMissing, set())


def test_with_options_puts_each_jobs_priority_and_category_on_its_row() -> None:
    rows = [EncodedRow(1, 5, b"a"), EncodedRow(2, 6, b"b")]
    assert with_options(rows, None) == rows
    assert with_options(rows, [(900, ""), (500, "reports")]) == [
        EncodedRow(1, 5, b"a", 900, ""),
        EncodedRow(2, 6, b"b", 500, "reports"),
    ]
