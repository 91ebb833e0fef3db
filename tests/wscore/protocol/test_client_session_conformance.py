"""Runs every scenario of ``tests/conformance/client_session.json`` against ClientSession.

The file is language-neutral (its ``format`` key says how to read it); the browser client
runs the same scenarios. This module is the Python reading of that format.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import pytest

from wscore.errors import ConnectionClosed, SendBufferFull, SessionLost, UsageError, WsError
from wscore.protocol import ClientSession
from wscore.protocol.client_session import (
    Abort,
    Action,
    ClientSessionOptions,
    Deliver,
    Disconnected,
    LoseSession,
    OpenConnection,
    Opened,
    Reconnect,
    RejectRequest,
    ResolveRequest,
    SendClose,
    SendFrame,
    Terminal,
)
from wscore.protocol.envelope import decode_envelope

FILE = pathlib.Path(__file__).resolve().parents[2] / "conformance" / "client_session.json"
DOC: dict[str, Any] = json.loads(FILE.read_text())
SCENARIOS: list[dict[str, Any]] = DOC["scenarios"]

RAISES: dict[str, type[BaseException]] = {
    "SendBufferFull": SendBufferFull,
    "UsageError": UsageError,
    "ConnectionClosed": ConnectionClosed,
    "WsError": WsError,
}


class ScriptedRandom:
    """The RNG a step provides: ``random`` from the step, or a failure if it has none."""

    def __init__(self) -> None:
        self.value: float | None = None

    def __call__(self) -> float:
        if self.value is None:
            raise AssertionError("the session drew a random number in a step that gives none")
        return self.value


def make_session(options: dict[str, Any], rng: ScriptedRandom) -> ClientSession:
    opts = ClientSessionOptions(
        max_unacked_frames=options["maxUnackedFrames"],
        max_unacked_bytes=options["maxUnackedBytes"],
        ack_every_frames=options["ackEveryFrames"],
        ack_delay=options["ackDelay"],
        backoff_base=options["backoffBase"],
        backoff_cap=options["backoffCap"],
        reconnect=options["reconnect"],
        max_reconnect_attempts=options["maxReconnectAttempts"],
        token_provider=options["tokenProvider"],
        token_in_query=options["tokenInQuery"],
        client_tag=options["clientTag"],
    )
    wall = int(options["wallMs"])
    return ClientSession(opts, random=rng, wall_ms=lambda: wall)


def error_kind(error: BaseException) -> tuple[str, int | None]:
    if isinstance(error, SessionLost):
        return "sessionLost", int(error.code)
    if isinstance(error, WsError):
        return "error", int(error.code)
    assert isinstance(error, ConnectionClosed), error
    return "closed", error.code


def as_json(action: Action) -> dict[str, Any]:
    """An action in the file's vocabulary (every key the format defines for it)."""
    if isinstance(action, OpenConnection):
        return {"action": "open", "query": dict(action.query)}
    if isinstance(action, SendFrame):
        frame = json.loads(action.text)
        frame.setdefault("s", None)
        return {"action": "send", "frame": frame}
    if isinstance(action, Deliver):
        return {"action": "deliver", "event": action.event, "payload": action.payload}
    if isinstance(action, ResolveRequest):
        return {"action": "resolve", "c": action.cid, "payload": action.payload}
    if isinstance(action, RejectRequest):
        kind, code = error_kind(action.error)
        return {"action": "reject", "c": action.cid, "kind": kind, "code": code}
    if isinstance(action, Opened):
        return {"action": "opened", "outcome": action.outcome.value,
                "sessionId": action.info.session_id, "lastSeq": action.info.last_seq}
    if isinstance(action, LoseSession):
        return {"action": "sessionLost", "code": int(action.error.code)}
    if isinstance(action, Disconnected):
        return {"action": "disconnected", "code": action.reason.code, "byPeer": action.reason.by_peer}
    if isinstance(action, Reconnect):
        return {"action": "reconnect", "delay": action.delay}
    if isinstance(action, Abort):
        return {"action": "abort", "reason": action.reason}
    if isinstance(action, SendClose):
        return {"action": "sendClose", "code": action.code}
    assert isinstance(action, Terminal), action
    kind, code = error_kind(action.error)
    return {"action": "terminal", "kind": kind, "code": code}


def same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, float) or isinstance(actual, float):
        if isinstance(expected, bool) or isinstance(actual, bool):
            return expected is actual
        return (isinstance(expected, (int, float)) and isinstance(actual, (int, float))
                and math.isclose(expected, actual, rel_tol=0, abs_tol=1e-9))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(same(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(map(same, expected, actual))
    return type(expected) is type(actual) and bool(expected == actual)


def matches(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    """Only the expected keys count; a ``frame`` is itself compared as a subset."""
    for key, want in expected.items():
        if key not in actual:
            return False
        got = actual[key]
        if key == "frame":
            if not all(k in got and same(v, got[k]) for k, v in want.items()):
                return False
        elif not same(want, got):
            return False
    return True


def snapshot(session: ClientSession) -> dict[str, Any]:
    return {
        "phase": session.phase.value,
        "sessionId": session.session_id,
        "delivered": session.delivered,
        "ackedToServer": session.acked_to_server,
        "lastOutSeq": session.last_out_seq,
        "serverAcked": session.server_acked,
        "unackedFrames": session.unacked_frames,
        "unackedBytes": session.unacked_bytes,
        "pending": session.pending,
        "failures": session.failures,
        "duplicates": session.duplicates_dropped,
        "gaps": session.gaps,
        "unmatchedReplies": session.unmatched_replies,
    }


def run_step(session: ClientSession, step: dict[str, Any], now: float) -> tuple[Any, list[Action]]:
    kind = step["in"]
    if kind == "connect":
        return None, session.connect(token=step.get("token"))
    if kind == "frame":
        frame = {"v": "1.0", **step["frame"]}
        return None, session.receive(decode_envelope(json.dumps(frame)), now)
    if kind == "closed":
        return None, session.on_closed(code=step.get("code"), reason=step.get("reason", ""),
                                       http_status=step.get("httpStatus"))
    if kind == "tick":
        return None, session.tick(now)
    if kind == "send":
        return None, session.send(step["event"], step.get("payload"))
    if kind == "request":
        return session.request(step["event"], step.get("payload"))
    if kind == "auth":
        return session.auth(step["token"])
    if kind == "abandon":
        session.abandon(step["c"])
        return None, []
    if kind == "close":
        return None, session.close(step.get("code", 1000), step.get("reason", ""))
    raise AssertionError(f"unknown input kind {kind!r}")


def test_the_file_describes_its_format_and_has_enough_scenarios() -> None:
    assert DOC["version"] == 1 and DOC["format"]
    names = [s["name"] for s in SCENARIOS]
    assert len(names) == len(set(names)) and len(names) >= 30
    for scenario in SCENARIOS:
        assert scenario["description"] and scenario["steps"], scenario["name"]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_scenario(scenario: dict[str, Any]) -> None:
    options = {**DOC["defaults"], **scenario["options"]}
    rng = ScriptedRandom()
    session = make_session(options, rng)
    now = 0.0
    for index, step in enumerate(scenario["steps"]):
        where = f"{scenario['name']} step {index} ({step['in']})"
        now = float(step.get("now", now))
        rng.value = step.get("random")
        if "raises" in step:
            with pytest.raises(RAISES[step["raises"]]):
                run_step(session, step, now)
        else:
            returned, actions = run_step(session, step, now)
            if "returns" in step:
                assert returned == step["returns"], where
            if "expect" in step:
                got = [as_json(a) for a in actions]
                want = step["expect"]
                assert len(got) == len(want) and all(map(matches, want, got)), \
                    f"{where}\n expected {want}\n got      {got}"
        if "state" in step:
            snap = snapshot(session)
            diff = {k: (v, snap.get(k)) for k, v in step["state"].items() if not same(v, snap.get(k))}
            assert not diff, f"{where}: state (expected, got) {diff}"
        if "deadline" in step:
            deadline = session.next_deadline()
            want_deadline = step["deadline"]
            assert (deadline is None) == (want_deadline is None), where
            if deadline is not None:
                assert math.isclose(deadline, want_deadline, abs_tol=1e-9), where
