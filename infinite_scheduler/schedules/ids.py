"""Occurrence ids: a schedule's occurrence is a one-shot row whose id is made from the schedule
id, its generation and the occurrence time, so that materialising it twice (two nodes, a
takeover, a pass repeated after a crash) stores it once: the second insert is a duplicate that
is ignored.

The **generation** counts the schedule's changes by people (update, pause, resume): the rows a
change cancels keep their ids, and the rows made after it get new ones, so an occurrence
cancelled by a pause and due again after the resume is stored anew instead of being ignored as
a duplicate of the cancelled row.

- str ids: ``"~s{schedule}.{generation}@{at_ms}"`` (``~`` starts no id a user is likely to
  choose; ids starting ``~s`` are reserved for schedules).
- int ids: **negative**, ``-(schedule << 40 | generation % 256 << 32 | at_s)``: 23 bits of
  schedule id (schedules of an int-id type must have ids below 2**23, checked at creation), 8 of
  generation, 32 of occurrence seconds (to 2106). Occurrences are at least a second apart
  (triggers.py), so the seconds tell them apart. Negative ids are reserved for schedules: a
  user's int ids must be >= 0 to be sure never to meet one. The generation wraps at 256: two
  generations 256 apart share ids, which can only collide if the schedule changed 256 times
  within one materialisation window (about a minute), since every generation's occurrences
  start after its change.

An **extra run** (``ScheduleBook.trigger``: one occurrence now, besides the schedule's own) has
an id of the same family, so it is listed with the schedule's occurrences and its history is
the schedule's, but never one of the materialiser's: str ids ``"~s{schedule}.x@{at_ms}"`` (no
generation is ``x``); int ids take the generation with its top bit flipped (generation ^ 128),
which meets a materialised occurrence only after 128 changes within a materialisation window,
as above. Two triggers in the same millisecond (str) or second (int) are one run.
"""

from __future__ import annotations

from repos.schedules import InvalidSchedule

#: Schedules of int-id entity types have ids below this (23 bits).
INT_SCHEDULE_LIMIT = 1 << 23
_GENERATIONS = 1 << 8
_SECONDS = 1 << 32


def occurrence_key(key_type: type, schedule_id: int, generation: int, at_ms: int) -> int | str:
    """The id of the occurrence at `at_ms` of a schedule at `generation`."""
    if key_type is str:
        return f"~s{schedule_id}.{generation}@{at_ms}"
    at_s = at_ms // 1000
    return -((schedule_id << 40) | ((generation % _GENERATIONS) << 32) | (at_s % _SECONDS))


def extra_run_key(key_type: type, schedule_id: int, generation: int, at_ms: int) -> int | str:
    """The id of an extra run at `at_ms` of a schedule at `generation` (trigger now)."""
    if key_type is str:
        return f"~s{schedule_id}.x@{at_ms}"
    return occurrence_key(key_type, schedule_id, generation ^ (_GENERATIONS >> 1), at_ms)


def check_schedule_id(key_type: type, schedule_id: int) -> None:
    """Refuse a schedule id an int-id type's occurrence ids cannot hold."""
    if key_type is int and not 0 < schedule_id < INT_SCHEDULE_LIMIT:
        raise InvalidSchedule(
            "id",
            f"schedule id {schedule_id} is beyond {INT_SCHEDULE_LIMIT - 1}, the most an int-id "
            "entity type's occurrence ids hold (infinite_scheduler/schedules/ids.py)",
        )


def schedule_of(key: int | str) -> int | None:
    """The schedule whose occurrence `key` is (occurrence_key), or None: a job of its own."""
    if isinstance(key, str):
        head, dot, _ = key.partition(".")
        if key.startswith("~s") and dot and head[2:].isdigit():
            return int(head[2:])
        return None
    return (-key) >> 40 if key < 0 else None


def occurrence_range(key_type: type, schedule_id: int) -> tuple[int | str, int | str]:
    """[first, after) of the ids of the schedule's occurrences, in the id's own order: str ids
    share the prefix ``~s{id}.`` (``/`` follows ``.``), int ids one 40-bit block below 0."""
    if key_type is str:
        return f"~s{schedule_id}.", f"~s{schedule_id}/"
    return -((schedule_id + 1) << 40) + 1, -(schedule_id << 40) + 1
