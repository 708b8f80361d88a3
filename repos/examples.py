"""Example entity types used by the demo, the docs and the tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from repos.entity import EntitySpec


@dataclass(frozen=True, slots=True, kw_only=True)
class SmsEntity:
    """A text message to send at `scheduled_at`."""

    id: int
    scheduled_at: datetime
    phone: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderEntity:
    """An unpaid order to expire at `expires_at`."""

    order_id: str
    expires_at: datetime
    customer_id: int
    amount_cents: int
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationEntity:
    """A push notification to deliver at `deliver_at`."""

    id: int
    deliver_at: datetime
    user_id: int
    title: str
    body: str = ""
    data: dict[str, Any] = field(default_factory=dict)


SMS = EntitySpec.of(SmsEntity, name="sms")
ORDERS = EntitySpec.of(OrderEntity, name="orders", id_field="order_id", time_field="expires_at")
NOTIFICATIONS = EntitySpec.of(NotificationEntity, name="notifications", time_field="deliver_at")
