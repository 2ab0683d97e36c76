"""One tree of errors for the whole studio.

Every error a user can cause carries a message they can act on (what was wrong, what is allowed, where we
looked). REST maps ``status_code``/``error_type`` onto the OpenAI error shape with ``message`` and ``param`` (the
technical detail: the dotted field path, pydantic's wording); the UI shows ``user_message``, the same in the
user's words ("Temperature must be between 0 and 2 (you entered 5)", see :mod:`studio.user_messages`), next to
the field ``param`` names where the form has it.

    StudioError
     ├── UserError                  (4xx: the request or the configuration is wrong)
     │    ├── ValidationError       400  a field is out of range / malformed (``param`` names it)
     │    ├── NotFoundError         404
     │    │    └── ModelNotFoundError    model name or path not found (message lists where we looked)
     │    ├── ConflictError         409
     │    ├── AuthenticationError   401  no key / wrong key / no session (every surface, one check)
     │    ├── ForbiddenError        403  a path outside the allowed roots, a host or origin not allowed
     │    ├── PayloadTooLargeError  413  body, prompt or upload over its configured limit
     │    └── RateLimitError        429  too many generations running and queued (``retry_after`` seconds)
     └── ServerError                (5xx: the studio or an engine failed)
          ├── ModelLoadError        500  model files exist but cannot be loaded (corrupt, unsupported)
          ├── BackendUnavailableError 503 an optional engine is not installed (message says how)
          ├── ShuttingDownError     503  the server is draining for shutdown and takes no new generations
          ├── HubUnavailableError   503  the Hugging Face Hub cannot be reached (HF_HUB_OFFLINE=1, no network)
          └── GenerationError       500
"""

from __future__ import annotations


class StudioError(Exception):
    """Base of every error raised by the studio core."""

    status_code: int = 500
    error_type: str = "server_error"

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, user_message: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.user_message = user_message or message  # the UI's wording; a hand-written message already is

    def to_openai(self) -> dict[str, object]:
        """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class UserError(StudioError):
    """Something the user asked for is wrong; the message says what to change."""

    status_code = 400
    error_type = "invalid_request_error"


class ValidationError(UserError):
    """A field is missing, out of range or malformed; ``param`` names the field."""

    status_code = 400


class NotFoundError(UserError):
    status_code = 404


class ModelNotFoundError(NotFoundError):
    def __init__(self, message: str, *, param: str | None = "model") -> None:
        super().__init__(message, param=param, code="model_not_found")


class ConflictError(UserError):
    status_code = 409


class AuthenticationError(UserError):
    status_code = 401
    error_type = "authentication_error"


class ForbiddenError(UserError):
    """The request is understood but not allowed (a path outside the allowed roots, a foreign origin)."""

    status_code = 403
    error_type = "permission_error"


class PayloadTooLargeError(UserError):
    """A body, prompt or upload is over its configured limit; the message names the limit and its setting."""

    status_code = 413

    def __init__(self, message: str, *, param: str | None = None, code: str | None = "request_too_large") -> None:
        super().__init__(message, param=param, code=code)


class RateLimitError(UserError):
    """Too many requests are running and waiting; try again after ``retry_after`` seconds."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after: float = 1.0, param: str | None = None) -> None:
        super().__init__(message, param=param, code="rate_limit_exceeded")
        self.retry_after = retry_after


class ServerError(StudioError):
    status_code = 500
    error_type = "server_error"


class ModelLoadError(ServerError):
    """The model's files were found but could not be loaded or converted."""


class BackendUnavailableError(ServerError):
    status_code = 503


class ShuttingDownError(ServerError):
    """The server is shutting down: running generations may finish, new ones are refused."""

    status_code = 503


class HubUnavailableError(ServerError):
    """The Hugging Face Hub cannot be reached: offline mode (``HF_HUB_OFFLINE=1``), no network, or the Hub failed;
    the message says which and what to do. Models already in the cache still work."""

    status_code = 503


class GenerationError(ServerError):
    pass
