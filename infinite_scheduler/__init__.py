"""infinite-scheduler: an asyncio engine that fires millions of stored jobs at their time.

Jobs live in date-sharded MySQL/MariaDB (or SQLite) tables; only the next lookahead window is
held in memory. Start with ``infinite-scheduler run --config config.toml``, or in code::

    from infinite_scheduler import EntitySpec, InfiniteScheduler, JobContext, load_config

Everything a user needs is importable from here; the modules behind it are internal.
"""

from __future__ import annotations

from infinite_scheduler.client import SchedulerClient as SchedulerClient
from infinite_scheduler.config import SchedulerConfig as SchedulerConfig
from infinite_scheduler.config import load_config as load_config
from infinite_scheduler.engine import InfiniteScheduler as InfiniteScheduler
from infinite_scheduler.errors import ClientNotOpen as ClientNotOpen
from infinite_scheduler.errors import ConfigError as ConfigError
from infinite_scheduler.errors import DependencyRefused as DependencyRefused
from infinite_scheduler.errors import DuplicateJob as DuplicateJob
from infinite_scheduler.errors import EngineNotRunning as EngineNotRunning
from infinite_scheduler.errors import EntitySpecError as EntitySpecError
from infinite_scheduler.errors import HandlerMissing as HandlerMissing
from infinite_scheduler.errors import InvalidIdentifier as InvalidIdentifier
from infinite_scheduler.errors import InvalidSchedule as InvalidSchedule
from infinite_scheduler.errors import JobOptionError as JobOptionError
from infinite_scheduler.errors import NodeDeclaredDead as NodeDeclaredDead
from infinite_scheduler.errors import NodeIdInUse as NodeIdInUse
from infinite_scheduler.errors import NodeRefused as NodeRefused
from infinite_scheduler.errors import ScheduleError as ScheduleError
from infinite_scheduler.errors import ScheduleExists as ScheduleExists
from infinite_scheduler.errors import ScheduleNotFound as ScheduleNotFound
from infinite_scheduler.errors import SchedulerError as SchedulerError
from infinite_scheduler.errors import ShardExpired as ShardExpired
from infinite_scheduler.errors import SingleNodeStore as SingleNodeStore
from infinite_scheduler.errors import StoreError as StoreError
from infinite_scheduler.errors import StoreUnavailable as StoreUnavailable
from infinite_scheduler.errors import UnknownCategory as UnknownCategory
from infinite_scheduler.job import DependsOn as DependsOn
from infinite_scheduler.job import Job as Job
from infinite_scheduler.jobs import JobContext as JobContext
from infinite_scheduler.schedules.triggers import CalendarTrigger as CalendarTrigger
from infinite_scheduler.schedules.triggers import CronTrigger as CronTrigger
from infinite_scheduler.schedules.triggers import DelayTrigger as DelayTrigger
from infinite_scheduler.schedules.triggers import RateTrigger as RateTrigger
from infinite_scheduler.version import __version__ as __version__
from repos.base import Status as Status
from repos.entity import EntitySpec as EntitySpec
from repos.history import HistoryFilter as HistoryFilter
from repos.history import HistoryRow as HistoryRow
from repos.history import Outcome as Outcome
from repos.history import SlaReport as SlaReport

__all__ = [
    "CalendarTrigger",
    "ClientNotOpen",
    "ConfigError",
    "DependencyRefused",
    "DependsOn",
    "CronTrigger",
    "DelayTrigger",
    "DuplicateJob",
    "EngineNotRunning",
    "EntitySpec",
    "EntitySpecError",
    "HandlerMissing",
    "HistoryFilter",
    "HistoryRow",
    "InfiniteScheduler",
    "InvalidIdentifier",
    "Job",
    "InvalidSchedule",
    "JobContext",
    "JobOptionError",
    "NodeDeclaredDead",
    "NodeIdInUse",
    "NodeRefused",
    "Outcome",
    "RateTrigger",
    "ScheduleError",
    "ScheduleExists",
    "ScheduleNotFound",
    "SchedulerClient",
    "SchedulerConfig",
    "SchedulerError",
    "ShardExpired",
    "SingleNodeStore",
    "SlaReport",
    "Status",
    "StoreError",
    "StoreUnavailable",
    "UnknownCategory",
    "__version__",
    "load_config",
]
