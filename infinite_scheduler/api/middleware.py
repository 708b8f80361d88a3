"""ASGI middleware: a request id for every request, and the body size limit.

Plain ASGI: a body over the limit is refused by its Content-Length before a byte of it is
read, and a chunked one as soon as its bytes pass the limit.
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infinite_scheduler.api.audit import request_id
from infinite_scheduler.api.errors import BodyTooLarge, error_response

REQUEST_ID_HEADER = b"x-request-id"


class RequestIds:
    """Gives each request an id (the error bodies', the audit rows' and the X-Request-Id
    response header's)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = secrets.token_hex(8)
        request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimit:
    """413 for a body over `max_bytes`: by its Content-Length before reading it, or once a
    chunked one's bytes pass the limit. The body is read here (it is small by then) and
    handed on whole: FastAPI would turn an error raised while it reads into a 400."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(declared, scope, receive, send)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)  # a disconnect
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                await self._refuse(seen, scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)

    async def _refuse(self, size: int, scope: Scope, receive: Receive, send: Send) -> None:
        message = (
            f"request body of {size} bytes or more is over api.max_body_bytes = {self.max_bytes}"
        )
        await error_response(413, BodyTooLarge.code, message)(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """`messages` first, then whatever comes (a disconnect)."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers", [])
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
