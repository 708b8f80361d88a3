"""The HTTP management API: schedules, blockouts, tokens with roles and ownership, the audit
log, health and readiness (infinite_scheduler/api/app.py builds it, server.py serves it)."""

from __future__ import annotations

from infinite_scheduler.api.app import create_app as create_app
from infinite_scheduler.api.roles import Caller as Caller
from infinite_scheduler.api.roles import Role as Role
from infinite_scheduler.api.services import ApiServices as ApiServices
