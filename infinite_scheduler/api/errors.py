"""One JSON error body for every 4xx and 5xx the API answers, and the one place that maps the
scheduler's error tree (and FastAPI's own) onto it::

    {"code": "not_found", "message": "...", "field": null, "request_id": "9f2c..."}

``code`` is stable (clients switch on it), ``message`` says what to do, ``field`` names the
request field at fault (``body.trigger.cron``), ``request_id`` is also the X-Request-Id header
and in the server's log line of the failure.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from infinite_scheduler.api.audit import request_id
from infinite_scheduler.errors import (
    InvalidJobRequest,
    InvalidSchedule,
    JobControlError,
    JobNotFound,
    JobStateRefused,
    ScheduleError,
    ScheduleNotFound,
    StoreError,
    StoreUnavailable,
    TokenExists,
    UnknownCategory,
)

logger = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """Every error response's body."""

    code: str
    message: str
    field: str | None = None
    request_id: str


class ApiError(Exception):
    """An error the API answers as is: its status, code, message and field."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.message = message
        self.field = field
        super().__init__(message)


class Unauthorized(ApiError):
    """No token, a malformed header, an unknown or revoked token."""

    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    """A token whose role is too low for the operation, or a non-admin acting for another
    owner."""

    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Invalid(ApiError):
    """A parameter the route's own checks refuse (its name in `field`)."""

    status = 422
    code = "invalid"


class BodyTooLarge(ApiError):
    status = 413
    code = "body_too_large"


#: Documented on every route: the uniform body.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Malformed request (bad JSON)"),
        (401, "No token, or an unknown or revoked one"),
        (403, "Role too low, or another owner's"),
        (404, "No such route or resource (or another owner's)"),
        (409, "Name taken, changed meanwhile, or the job's state refuses it"),
        (413, "Body over api.max_body_bytes"),
        (422, "A field is invalid (named in `field`)"),
        (503, "The store cannot be reached"),
    )
}


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body = ErrorBody(code=code, message=message, field=field, request_id=request_id.get())
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the uniform body."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ScheduleError, _schedule_error)
    app.add_exception_handler(JobControlError, _job_error)
    app.add_exception_handler(UnknownCategory, _unknown_category)
    app.add_exception_handler(TokenExists, _conflict)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(Exception, _unexpected)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.field)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    first: dict[str, Any] = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ())) or None
    if first.get("type") == "json_invalid":
        reason = first.get("ctx", {}).get("error", "invalid JSON")
        return error_response(400, "malformed_json", f"the body is not valid JSON: {reason}")
    message = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg"))
    more = len(errors) - 1
    if more > 0:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return error_response(422, "invalid", message, where)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /docs"
    return error_response(exc.status_code, code, message)


async def _schedule_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, InvalidSchedule):
        return error_response(422, "invalid", str(exc), f"body.{exc.field}")
    if isinstance(exc, ScheduleNotFound):
        return error_response(404, "not_found", str(exc))
    return error_response(409, "conflict", str(exc))  # ScheduleExists: the name is taken


async def _job_error(request: Request, exc: Exception) -> JSONResponse:
    """The job service's refusals; `field` names the service's input (entity, id, at,
    cursor, size, ...)."""
    if isinstance(exc, InvalidJobRequest):
        return error_response(422, "invalid", str(exc), exc.field)
    if isinstance(exc, JobNotFound):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, JobStateRefused):
        return error_response(409, "state_refused", str(exc))
    return error_response(409, "conflict", str(exc))


async def _unknown_category(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, "not_found", str(exc))


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return error_response(409, "conflict", str(exc))


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("store error: %s", exc, extra={"action": "api", "request_id": request_id.get()})
    if isinstance(exc, StoreUnavailable):
        return error_response(503, "store_unavailable", str(exc))
    return error_response(503, "store_error", str(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception(
        "internal error serving %s %s",
        request.method,
        request.url.path,
        extra={"action": "api", "request_id": request_id.get()},
    )
    return error_response(
        500, "internal", "internal error; the server log has it under this request id"
    )
