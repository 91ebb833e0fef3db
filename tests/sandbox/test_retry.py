"""wscore.sandbox.retry: retried errors back off, the others stop at once."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from wscore import ErrorCode, WsError
from wscore.sandbox.retry import Backoff, NotRetryable, retrying


def failing(*errors: BaseException) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return calls, call


def test_a_missing_handler_is_not_retried() -> None:
    calls, call = failing(WsError(ErrorCode.HANDLER_NOT_FOUND, "no handler for echo"))
    with pytest.raises(NotRetryable, match=r"client 1's barrier: the app answered 'echo' with "
                                           r"1008 handlerNotFound .*not retryable"):
        retrying(call, what="client 1's barrier", event="echo")
    assert len(calls) == 1


def test_retryable_errors_and_timeouts_are_retried_after_a_pause() -> None:
    calls, call = failing(WsError(ErrorCode.RATE_LIMIT_EXCEEDED), TimeoutError(),
                          WsError(ErrorCode.SESSION_NOT_FOUND))
    assert retrying(call, what="w", event="e", backoff=Backoff(base=0.001)) == "ok"
    assert len(calls) == 4


def test_the_deadline_ends_the_retries() -> None:
    _calls, call = failing(*[TimeoutError()] * 1000)
    with pytest.raises(TimeoutError, match="did not succeed before the deadline"):
        retrying(call, what="w", event="e", deadline=time.monotonic() + 0.05,
                 backoff=Backoff(base=0.001, cap=0.01))


def test_backoff_stops_at_the_deadline() -> None:
    backoff = Backoff(base=0.001, cap=0.004)
    assert [backoff.pause() for _ in range(4)] == [True] * 4
    assert backoff.pause(deadline=time.monotonic() - 1) is False
