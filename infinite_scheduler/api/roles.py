"""Who may do what through the API: roles, the caller a token stands for, and ownership.

Pure rules, no I/O: the routes ask them and raise what they answer. Roles are ordered, each
allowing what the ones below it allow::

    READ < SCHEDULE < EXECUTE < ADMIN
    read   create, change,  run now  tokens, audit log, blockouts,
           pause, cancel,   (jobs,   categories, the engine pause,
           reschedule,      trigger) one-shot jobs, bulk without
           delete                    a schedule, everyone's

A non-admin caller sees and changes only the schedules its token's owner owns. One it does not
own answers 404, as one that does not exist: a caller cannot learn another owner's schedule
names by probing (403 would confirm they exist).

Jobs have no owner column; their owner follows from their id. An occurrence of a recurring
schedule (its id carries the schedule's: schedules/ids.py) is that schedule's owner's: others
get 404 for it, as for the schedule. A one-shot job (or the occurrence of a schedule deleted
since) is no one's: every caller may read it, only ADMIN changes it (403).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Role(IntEnum):
    """A token's role; a larger one allows everything a smaller one does."""

    READ = 1  #: list and read schedules and blockouts
    SCHEDULE = 2  #: create, update, pause, resume, delete its own schedules; change their jobs
    EXECUTE = 3  #: run things now: a job, a schedule's extra occurrence
    ADMIN = 4  #: everything, everyone's: blockouts, categories, the engine, the audit log, tokens

    @classmethod
    def parse(cls, name: str) -> Role:
        """From its name, any case; ValueError naming the roles otherwise."""
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(
                f"unknown role {name!r}: one of {', '.join(r.name for r in cls)}"
            ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Caller:
    """Who a request acts as: a token's name (the audit log's actor), role and owner."""

    name: str
    role: Role
    owner: str

    @property
    def admin(self) -> bool:
        return self.role >= Role.ADMIN

    def may(self, role: Role) -> bool:
        return self.role >= role

    def owns(self, owner: str) -> bool:
        """Whether this caller may see and change what `owner` owns."""
        return self.admin or owner == self.owner

    def owner_for(self, requested: str | None) -> str | None:
        """The owner a new schedule gets: the one asked for, or the caller's; None when a
        non-admin asks for another owner's (refused)."""
        if requested is None or requested == self.owner:
            return self.owner
        return requested if self.admin else None


def may_see_job(who: Caller, owner: str | None) -> bool:
    """Whether the caller may read a job whose schedule's owner is `owner` (None: no one's)."""
    return owner is None or who.owns(owner)


def may_change_job(who: Caller, owner: str | None) -> bool:
    """Whether the caller may change it: its schedule's owner's (or ADMIN) only."""
    return who.admin if owner is None else who.owns(owner)


#: The caller of an open API (api.allow_open, no token stored, 127.0.0.1 only).
OPEN_CALLER = Caller(name="open-local", role=Role.ADMIN, owner="")
