"""A job's priority and category packed into one int: what the wheel holds beside each job.

0 stands for the defaults (priority 500, no category), a cached small int: a held job of the
usual kind pays the tuple's one slot for them and no object of its own (W5). Any other pair is
``priority + 1024 * code``, never 0 (a priority is at least 1), where `code` numbers the
category names in the order this process first met them (0: no category). The codes live only
in memory: the store keeps the names (repos/mysql/sql.py, COLUMNS), so nodes need not agree on
them.
"""

from __future__ import annotations

import threading

DEFAULT_PRIORITY = 500
MIN_PRIORITY = 1
MAX_PRIORITY = 1000
#: The longest category name (the store's column is that wide).
MAX_CATEGORY = 64
_SHIFT = 10  # 1024 > MAX_PRIORITY
_MASK = (1 << _SHIFT) - 1

_codes: dict[str, int] = {"": 0}
_names: list[str] = [""]
#: SQLite claims decode rows on the adapter's thread: a new name gets one code, not two.
_lock = threading.Lock()


def pack(priority: int, category: str) -> int:
    """The options int of a job (0 for the defaults)."""
    if priority == DEFAULT_PRIORITY and not category:
        return 0
    return priority | category_code(category) << _SHIFT


def priority_of(options: int) -> int:
    return options & _MASK if options else DEFAULT_PRIORITY


def code_of(options: int) -> int:
    """The category code of a job's options (0: no category)."""
    return options >> _SHIFT


def category_code(name: str) -> int:
    """The code of a category name, made on first sight."""
    code = _codes.get(name)
    if code is None:
        with _lock:
            code = _codes.get(name)
            if code is None:
                code = _codes[name] = len(_names)
                _names.append(name)
    return code


def rank(due_ms: int, priority: int, boost_per_ms: float) -> float:
    """A due job's place in line, lowest first: its effective priority, ``priority + boost *
    minutes overdue``, negated, less ``boost * now`` (the same for every job at any one now, so
    left out: a rank is fixed when the job is due, and needs no re-sorting as time passes).
    The one definition of the order: infinite_scheduler/waiting.py's heaps, and the claims of a
    backlog (repos/ranked.py)."""
    return due_ms * boost_per_ms - priority


def category_name(code: int) -> str:
    return _names[code]
