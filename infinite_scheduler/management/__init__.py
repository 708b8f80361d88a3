"""Job control for operators: one service (service.py) that the CLI and, later, the HTTP API
call; its rules (rules.py) and its inputs and outputs (values.py)."""

from __future__ import annotations

from infinite_scheduler.management.rules import CLAIM_REACH_MS as CLAIM_REACH_MS
from infinite_scheduler.management.rules import Operation as Operation
from infinite_scheduler.management.service import JobService as JobService
from infinite_scheduler.management.values import BulkResult as BulkResult
from infinite_scheduler.management.values import JobFilter as JobFilter
from infinite_scheduler.management.values import JobPage as JobPage
from infinite_scheduler.management.values import JobView as JobView
from infinite_scheduler.management.values import PageRequest as PageRequest
