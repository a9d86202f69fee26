"""Domain errors. Domain code raises these; the web layer maps them to HTTP status codes.

Every error names what is wrong in ``message`` and may carry structured ``details`` (for example an
import validation report).
"""

from __future__ import annotations

from typing import Any


class CityOpsError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, details: Any = None):
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(CityOpsError):
    status_code = 422
    code = "invalid_input"


class UnknownCRS(InvalidInput):
    code = "unknown_crs"


class InvalidGeometry(InvalidInput):
    code = "invalid_geometry"


class ValidationFailed(InvalidInput):
    """A whole import was rejected; ``details`` holds the validation report."""

    code = "validation_failed"


class NotFound(CityOpsError):
    status_code = 404
    code = "not_found"


class Conflict(CityOpsError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(CityOpsError):
    status_code = 413
    code = "payload_too_large"


class Unauthenticated(CityOpsError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(CityOpsError):
    status_code = 403
    code = "forbidden"


class OutsideJurisdiction(CityOpsError):
    status_code = 404
    code = "outside_jurisdiction"


class Busy(CityOpsError):
    """A bounded queue is full: the request was not taken; the client retries after ``retry_after`` seconds."""

    status_code = 503
    code = "busy"
    retry_after = 1
