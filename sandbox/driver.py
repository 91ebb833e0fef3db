"""The clients of one ``sandbox run``: connecting, the send phase, re-joining, and what they saw.

All clients live in the runner's process, in gevent, and every callback
records into one :class:`~sandbox.ledger.Ledger` in arrival order. What each
client does is its :class:`~sandbox.workload.Workload` (the chat workload by
default); this module only carries it out:

* **connect and join** one client after another (so the proxy's connection
  indexes — hence its seeded per-connection fault RNGs — are the same every
  run); client 0 first checks, alone in its room, that the app answers every
  request the workload makes (:meth:`Driver.connect_and_join`: a missing
  handler is a one-line :class:`~sandbox.app.ScenarioError`, exit 2);
* **send**: each client, paced by its own seeded RNG, publishes probe texts
  (:mod:`sandbox.probe`; sent without waiting for a reply) or, for an
  ``rpc_ratio`` share, the workload's RPCs (:meth:`~sandbox.workload.Workload.rpc`,
  ``echo`` by default) with unique tokens;
* **re-join** its room after every session loss (a new session is in no room),
  retrying with backoff;
* count every request that gave up, per client, for the unmatched-replies
  policy of :mod:`sandbox.guarantees`.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import attrs
import gevent
import gevent.event
import gevent.pool

from wscore.client import ConnectionClosed, SendBufferFull, SessionInfo, WsClient, WsClientConfig
from wscore.errors import WsError
from wscore.sandbox.api import ProxyHandle
from wscore.sandbox.app import AppConfig, ScenarioError
from wscore.sandbox.drain import Fences
from wscore.sandbox.guarantees import stray_replies
from wscore.sandbox.ledger import Ledger
from wscore.sandbox.probe import ProbeSender, parse_probe
from wscore.sandbox.retry import NotRetryable, retrying
from wscore.sandbox.workload import Request, Workload

__all__ = ["Driver"]

log = logging.getLogger("wscore.sandbox.runner")

_FILLER = "abcdefghijklmnopqrstuvwxyz0123456789 "


class Driver:
    """The clients of one run and their callbacks (module docstring)."""

    def __init__(self, *, net: ProxyHandle, app: AppConfig, workloads: Sequence[Workload], seed: int,
                 client_config: WsClientConfig) -> None:
        self.net = net
        self.seed = seed
        self.workloads = workloads
        self.ledger = Ledger()
        self.t0 = time.monotonic()
        self.clients: list[WsClient] = []
        self.probes = [ProbeSender(str(i)) for i in range(len(workloads))]
        self.given_up = [0] * len(workloads)  # requests that stopped waiting, per client
        self.rpc_ids = itertools.count(1)
        self.rpcs = gevent.pool.Group()
        self.rejoins_done = [0] * len(workloads)
        self.rejoined = [gevent.event.Event() for _ in workloads]
        self.loss_wakeup = [gevent.event.Event() for _ in workloads]
        self.rejoiners = gevent.pool.Group()
        self.fences = Fences([w.room for w in workloads])
        self.stopping = False
        for i, workload in enumerate(workloads):
            self.ledger.add_client(i, workload.room)
            client = WsClient(net.url(app.path), config=client_config,
                              rng=random.Random(f"{seed}/backoff/{i}"))
            self._wire(i, client)
            self.clients.append(client)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def request(self, i: int, request: Request, timeout: float | None = None) -> Any:
        """``clients[i].request(...)``, counting a request that gives up (timeout, killed, closed)."""
        try:
            return self.clients[i].request(request.event, request.payload, timeout=timeout)
        except (WsError, SendBufferFull):
            raise  # answered with an error, or never sent: no reply can come late
        except BaseException:
            self.given_up[i] += 1
            raise

    # -- callbacks (run in each client's dispatcher, in arrival order) ------------------------
    def _wire(self, i: int, client: WsClient) -> None:
        ledger, workload = self.ledger, self.workloads[i]

        def on_delivery(payload: Any) -> None:
            text = workload.delivered_text(payload)
            ledger.chat_received(i, text, time=self.now())
            problem = workload.check_delivery(payload) if text is not None else None
            if problem is not None:
                ledger.delivery_malformed(i, text, problem)  # arrived, but not as it must
            probe = parse_probe(text)
            if probe is not None and probe.filler == Fences.FILLER:
                self.fences.arrived(i, probe.sender)

        def on_error(payload: Any) -> None:
            p = payload if isinstance(payload, dict) else {}
            ledger.server_error(i, time=self.now(), code=int(p.get("code", 0)),
                                name=str(p.get("name", "?")))

        def on_connect(info: SessionInfo) -> None:
            ledger.connected(i, time=self.now(), resumed=info.resumed)

        def on_disconnect(_reason: ConnectionClosed) -> None:
            if not self.stopping:
                ledger.disconnected(i, time=self.now())

        def on_session_lost(_error: WsError) -> None:
            ledger.session_lost(i, time=self.now())
            self.loss_wakeup[i].set()

        client.on(workload.delivery_event, on_delivery)
        client.on("sys.error", on_error)
        client.on_connect(on_connect)
        client.on_disconnect(on_disconnect)
        client.on_session_lost(on_session_lost)
        self.rejoiners.spawn(self._rejoiner, i)

    def _rejoiner(self, i: int) -> None:
        """Re-join the room after every session loss (a new session is in no room)."""
        client, join = self.clients[i], self.workloads[i].join()
        while True:
            self.loss_wakeup[i].wait()
            self.loss_wakeup[i].clear()
            target = client.stats().sessions_lost
            try:
                retrying(lambda: self.request(i, join), what=f"client {i}'s re-join",
                         event=join.event)
            except NotRetryable as exc:
                log.error("%s", exc)
                return
            except ConnectionClosed:
                return
            self.ledger.rejoined(i, time=self.now())
            self.rejoins_done[i] = target
            self.rejoined[i].set()

    # -- phases -----------------------------------------------------------------------------
    def connect_and_join(self, timeout: float) -> None:
        """Connect and join, one client after another; client 0 first checks the app's events.

        Raises :class:`ScenarioError` (one line) when a client cannot, through a clean proxy,
        or when the app does not answer every request the workload makes (all named at once).
        """
        for i, client in enumerate(self.clients):
            workload = self.workloads[i]
            try:
                client.connect(timeout=timeout)
            except (WsError, ConnectionClosed, TimeoutError) as exc:
                raise ScenarioError(f"client {i} could not connect through a clean proxy: "
                                    f"{type(exc).__name__}: {exc}") from None
            if i == 0:
                self._check_events(timeout)
            else:
                problem = self._check(i, workload.join(), timeout)
                if problem is not None:
                    raise ScenarioError(f"client {i} could not join {workload.room}: {problem}")

    def _check_events(self, timeout: float) -> None:
        """Client 0 — alone in its room, so its publish reaches nobody — makes each kind of
        request once; every one the app refuses or answers wrongly is named in one line."""
        workload = self.workloads[0]
        checks = [workload.join(), workload.publish("sandbox: does the app answer this?"),
                  workload.rpc("check/0", "check"), workload.barrier()]
        problems: list[str] = []
        seen: set[str] = set()
        for request in checks:
            if request.event in seen:
                continue
            seen.add(request.event)
            problem = self._check(0, request, timeout)
            if problem is not None:
                problems.append(problem)
        if problems:
            needed = list(dict.fromkeys([*workload.requests, *(r.event for r in checks)]))
            raise ScenarioError(f"{'; '.join(problems)} — the {type(workload).__name__} needs "
                                f"{', '.join(needed)}")

    def _check(self, i: int, request: Request, timeout: float) -> str | None:
        """None when the app answers ``request`` as its check wants, else what went wrong."""
        try:
            reply = self.request(i, request, timeout=timeout)
        except WsError as exc:
            return (f"the app answered {request.event!r} with {int(exc.code)} "
                    f"{exc.code.wire_name} ({exc.message})")
        except (ConnectionClosed, TimeoutError) as exc:
            return f"{request.event!r} got no answer ({type(exc).__name__}: {exc})"
        problem = request.check(reply)
        return None if problem is None else f"the app answered {request.event!r} wrongly: {problem}"

    def send_phase(self, *, duration: float, rate: float, rpc_ratio: float,
                   rpc_timeout: float) -> None:
        start = time.monotonic()
        senders = gevent.pool.Group()
        for i in range(len(self.clients)):
            senders.spawn(self._sender, i, start, duration, rate, rpc_ratio, rpc_timeout)
        senders.join()

    def _sender(self, i: int, start: float, duration: float, rate: float, rpc_ratio: float,
                rpc_timeout: float) -> None:
        rng = random.Random(f"{self.seed}/traffic/{i}")
        at = start
        while True:
            # Every draw happens on every tick, whatever the outcome: the schedule replays.
            at += rng.uniform(0.5, 1.5) / rate
            is_rpc = rng.random() < rpc_ratio
            filler = "".join(rng.choices(_FILLER, k=rng.randint(8, 160)))
            if at >= start + duration:
                return
            gevent.sleep(max(0.0, at - time.monotonic()))  # pacing, not synchronisation
            if is_rpc:
                self.rpcs.spawn(self._rpc, i, filler, rpc_timeout)
            else:
                self.publish(i, filler)

    def publish(self, i: int, filler: str) -> bool:
        """Hand client ``i``'s next probe to its client (no reply awaited); False if refused."""
        client, sender = self.clients[i], self.probes[i]
        probe = sender.next(sent_ns=time.time_ns(), filler=filler)
        text = probe.text()
        message = self.workloads[i].publish(text)
        # Read before send(): frames enqueued from now on belong to this session epoch.
        epoch = client.stats().sessions_lost
        try:
            client.send(message.event, message.payload)
        except (SendBufferFull, ConnectionClosed) as exc:
            log.info("client %d: send refused: %s", i, exc)
            sender.refused()
            self.ledger.chat_refused(i)
            return False
        self.ledger.chat_sent(i, probe.seq, text, time=self.now(), epoch=epoch)
        return True

    def _rpc(self, i: int, filler: str, timeout: float) -> None:
        rpc_id = next(self.rpc_ids)
        request = self.workloads[i].rpc(f"{i}/{rpc_id}", filler)
        self.ledger.rpc_sent(i, rpc_id, time=self.now())
        try:
            reply = self.request(i, request, timeout=timeout)
        except SendBufferFull:
            self.ledger.rpc_refused(i)
            return
        except WsError as exc:
            self.ledger.rpc_failed(i, rpc_id, time=self.now(), code=int(exc.code),
                                   name=exc.code.name)
            return
        except (TimeoutError, ConnectionClosed):
            return  # counted as unanswered by the ledger
        self.ledger.rpc_answered(i, rpc_id, time=self.now(),
                                 correct=request.check(reply) is None)

    # -- results ----------------------------------------------------------------------------
    def clients_stopped(self) -> dict[str, int]:
        """Clients that stopped for good on their own (e.g. close 4000), by reason."""
        reasons: dict[str, int] = {}
        for client in self.clients:
            reason = client.close_reason
            if reason is not None:
                key = f"{type(reason).__name__}: {reason}"
                reasons[key] = reasons.get(key, 0) + 1
        return reasons

    def client_counters(self) -> dict[str, int]:
        """The clients' ``stats()`` summed, plus ``requests_given_up`` and ``stray_replies``
        (per client first: :func:`sandbox.guarantees.stray_replies`)."""
        total: dict[str, int] = {"requests_given_up": sum(self.given_up), "stray_replies": 0}
        for i, client in enumerate(self.clients):
            stats = client.stats()
            for key, value in attrs.asdict(stats).items():
                total[key] = total.get(key, 0) + int(value)
            total["stray_replies"] += stray_replies(stats.unmatched_replies, self.given_up[i])
        return total

    def close(self) -> None:
        self.stopping = True
        self.rpcs.kill(block=False)
        self.rejoiners.kill(block=False)
        closers = gevent.pool.Group()
        for client in self.clients:
            closers.spawn(client.close)
        closers.join(timeout=10)
