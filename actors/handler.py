"""HandlerActor: runs the handlers of one :class:`wscore.WsActorController`.

Rules it keeps: one handler at a time, across all sessions; it reports every
run back to the session with :class:`HandlerFinished` (also on failure) so
the session can go on with its next frame; it never waits on a session.
"""

from __future__ import annotations

import logging
from typing import Any

from wscore.actors._runtime import GeventActor, tell_quietly
from wscore.actors.messages import HandlerFinished, RunHandler, Stats
from wscore.errors import WsError
from wscore.protocol.codes import ErrorCode

__all__ = ["HandlerActor"]

log = logging.getLogger("wscore.actors.handler")


class HandlerActor(GeventActor):
    def __init__(self, controller: Any) -> None:
        super().__init__()
        self.controller = controller
        self.runs = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RunHandler):
            self._run(message)
        elif isinstance(message, Stats):
            return {"runs": self.runs, "controller": type(self.controller).__name__}
        return None

    def _run(self, msg: RunHandler) -> None:
        self.runs += 1
        ctx = msg.ctx
        c = ctx.correlation_id
        try:
            result = msg.fn(ctx)
        except WsError as err:
            finished = HandlerFinished(msg.token, c, error=err)
        except Exception:
            log.exception("actor handler for %r raised", ctx.event)
            finished = HandlerFinished(
                msg.token, c, error=WsError(ErrorCode.INTERNAL_ERROR, "internal server error")
            )
        else:
            finished = HandlerFinished(msg.token, c, result=result, replied=ctx.replied)
        tell_quietly(msg.session_ref, finished)  # the session may have ended meanwhile
