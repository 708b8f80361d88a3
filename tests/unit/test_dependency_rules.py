"""The pure rules of dependencies: resolution, cycles, and what becomes of a waiting job."""

from __future__ import annotations

import pytest

from infinite_scheduler.dependencies import (
    DROP,
    READY,
    WAIT,
    Decision,
    Outcome,
    RowsById,
    decide,
    resolve,
)
from infinite_scheduler.errors import DependencyRefused
from infinite_scheduler.job import DependsOn, Job, split_jobs
from repos.base import Status
from repos.dependencies import Edge, JobRef, Must

A, B, C = JobRef("sms", 1, 10), JobRef("sms", 2, 10), JobRef("orders", "c", 10)


def edge(on: JobRef, must: Must = Must.COMPLETE) -> Edge:
    return Edge(A, on, must)


@pytest.mark.parametrize(
    ("deps", "expected"),
    [
        ([], READY),
        ([(edge(B), Status.DONE), (edge(C), Status.CANCELLED)], READY),
        ([(edge(B), Status.DONE), (edge(C), Status.CLAIMED)], WAIT),
        ([(edge(B), Status.WAITING)], WAIT),
        ([(edge(B), 9)], WAIT),  # a status this version does not know never finished
        ([(edge(B), None)], READY),  # gone with its shard: it will never finish now
        ([(edge(B, Must.SUCCEED), Status.DONE)], READY),
        (
            [(edge(C), Status.PENDING), (edge(B, Must.SUCCEED), Status.MISSED)],
            Decision(Outcome.FAIL, "dependency sms 2 MISSED; it had to succeed"),
        ),
        (
            [(edge(B, Must.SUCCEED), None)],
            Decision(Outcome.FAIL, "dependency sms 2 is no longer stored"),
        ),
    ],
)
def test_decide_a_waiting_job(deps, expected) -> None:
    assert decide(Status.WAITING, deps) == expected


@pytest.mark.parametrize("status", [Status.CANCELLED, Status.PENDING, None])
def test_a_job_no_longer_waiting_only_loses_its_edges(status) -> None:
    assert decide(status, [(edge(B), Status.DONE)]) == DROP


def test_resolve_makes_an_edge_per_row_an_id_stands_for() -> None:
    job = Job(object(), depends_on=(DependsOn("sms", 2, must="succeed"),))
    other = JobRef("sms", 2, 99)
    edges = resolve([(A, job)], {("sms", 2): [B, other]})
    assert edges == [Edge(A, B, Must.SUCCEED), Edge(A, other, Must.SUCCEED)]


def test_a_long_chain_is_no_cycle_and_a_ring_is() -> None:
    refs = [JobRef("sms", i, 10) for i in range(5000)]
    chain = [
        (refs[i], Job(object(), depends_on=(DependsOn("sms", i - 1),))) for i in range(1, 5000)
    ]
    rows: RowsById = {("sms", i): [refs[i]] for i in range(5000)}
    assert len(resolve(chain, rows)) == 4999
    ring = [*chain, (refs[0], Job(object(), depends_on=(DependsOn("sms", 4999),)))]
    with pytest.raises(
        DependencyRefused,
        match=r"makes a cycle \(sms \d+ -> sms \d+ -> sms \d+ -> sms \d+ -> \.\.\. 4995 more -> sms \d+ -> sms \d+\)",
    ):
        resolve(ring, rows)


def test_bad_options_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="must is 'complete' or 'succeed', not 'finish'"):
        DependsOn("sms", 1, must="finish")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="id is an int or a str, not float"):
        DependsOn("sms", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="takes DependsOn values"):
        Job(object(), depends_on=(("sms", 1),))  # type: ignore[arg-type]


def test_split_jobs_keeps_plain_calls_as_they_are_and_jobs_with_their_options() -> None:
    items = [object(), object()]
    assert split_jobs(items) == (items, [])
    ranked = Job(object(), priority=900)
    waiting_job = Job(object(), depends_on=(DependsOn("sms", 1),))
    assert split_jobs([ranked, waiting_job]) == ([ranked], [waiting_job])
