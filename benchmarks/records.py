"""The fire records: what a handler under test writes and what the harness reads back.

One record per fire, three little-endian int64: job id, scheduled time (epoch ms), fired time
(epoch microseconds, read by the handler itself). Binary and fixed-width, so that writing costs
one ``array.extend`` per fire and a file append per batch, and a record cut short by ``kill -9``
is simply dropped when read.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from pathlib import Path

WIDTH = 3
RECORD_BYTES = 8 * WIDTH


@dataclass(slots=True)
class Fires:
    """Records as columns."""

    ids: array[int] = field(default_factory=lambda: array("q"))
    scheduled_ms: array[int] = field(default_factory=lambda: array("q"))
    fired_us: array[int] = field(default_factory=lambda: array("q"))

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, flat: array[int]) -> None:
        self.ids.extend(flat[0::WIDTH])
        self.scheduled_ms.extend(flat[1::WIDTH])
        self.fired_us.extend(flat[2::WIDTH])

    def merged(self, other: Fires) -> Fires:
        both = Fires()
        for part in (self, other):
            both.ids.extend(part.ids)
            both.scheduled_ms.extend(part.scheduled_ms)
            both.fired_us.extend(part.fired_us)
        return both

    def lateness_ms(self) -> list[float]:
        return [f / 1000 - s for s, f in zip(self.scheduled_ms, self.fired_us, strict=True)]


def decode(data: bytes) -> array[int]:
    flat = array("q")
    flat.frombytes(data[: len(data) - len(data) % RECORD_BYTES])
    return flat


def read(path: Path) -> Fires:
    fires = Fires()
    if path.exists():
        fires.extend(decode(path.read_bytes()))
    return fires


class Tail:
    """Follows a record file while it grows (the harness counts fires as they land)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fires = Fires()
        self._offset = 0

    def poll(self) -> int:
        """Read what was appended since the last poll; return the number of new records."""
        if not self.path.exists():
            return 0
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        usable = len(data) - len(data) % RECORD_BYTES
        self._offset += usable
        before = len(self.fires)
        self.fires.extend(decode(data[:usable]))
        return len(self.fires) - before
