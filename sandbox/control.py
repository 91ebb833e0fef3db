"""A tiny Toxiproxy-like HTTP control API for a running proxy (gevent pywsgi).

Routes (JSON in, JSON out; errors are ``{"error": "<one line>"}``)::

    GET    /            faults + stats
    GET    /faults      {"faults": [fault, …]}
    PUT    /faults      body {"faults": [...]} — replace all faults
    POST   /faults      body a fault or {"faults": [...]} — add faults
    DELETE /faults      remove all faults
    GET    /stats       proxy.stats()
    GET    /fault-log   {"records": [...]}; ?since=N skips the first N kept records
    POST   /actions/cut                           reset every live connection
    POST   /actions/blackhole  {"seconds": N}     hold all traffic for N s
    POST   /actions/refuse     {"seconds": N, "mode": "reset"|"hold"}

Bad JSON or values → 400, unknown path → 404, wrong method → 405.  Bind it
to loopback only: it has no authentication.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

from gevent.pywsgi import WSGIServer

from wscore.sandbox.fault_proxy import FaultProxy, ProxyError, format_address
from wscore.sandbox.faults import fault_from_dict, fault_to_dict, faults_from_list

__all__ = ["ControlServer"]

log = logging.getLogger("wscore.sandbox.control")

_MAX_BODY_BYTES = 64 * 1024

StartResponse = Callable[..., Any]


class _HttpError(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _seconds(body: Any) -> float:
    value = body.get("seconds") if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise _HttpError("400 Bad Request", "body needs \"seconds\": a number >= 0")
    return float(value)


class ControlServer:
    """Serves the control API for ``proxy`` on ``address`` (loopback)."""

    def __init__(self, proxy: FaultProxy, address: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.proxy = proxy
        self._address = address
        self._server: WSGIServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            return self._address
        host, port = self._server.address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        return f"http://{format_address(self.address)}"

    def start(self) -> None:
        """Bind and serve in the background; :class:`ProxyError` if binding fails."""
        server = WSGIServer(self._address, self._app, log=None, error_log=log)
        try:
            server.start()
        except OSError as exc:
            raise ProxyError(
                f"cannot listen on {format_address(self._address)}: {exc}") from None
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)
            self._server = None

    # -- WSGI ----------------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/").rstrip("/") or "/"
        try:
            status, payload = self._route(method, path, environ)
        except _HttpError as exc:
            status, payload = exc.status, {"error": exc.message}
        except Exception:  # never let a control bug take the proxy down
            log.exception("control API error")
            status, payload = "500 Internal Server Error", {"error": "internal error"}
        body = (json.dumps(payload, default=str) + "\n").encode()
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(body)))])
        return [body]

    def _body(self, environ: dict[str, Any]) -> Any:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise _HttpError("400 Bad Request", "bad Content-Length") from None
        if length > _MAX_BODY_BYTES:
            raise _HttpError("413 Payload Too Large", "body too large")
        raw = environ["wsgi.input"].read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise _HttpError("400 Bad Request", f"invalid JSON: {exc}") from None

    def _route(self, method: str, path: str, environ: dict[str, Any]) -> tuple[str, Any]:
        proxy = self.proxy
        ok = "200 OK"
        routes: dict[str, tuple[str, ...]] = {
            "/": ("GET",), "/faults": ("GET", "PUT", "POST", "DELETE"), "/stats": ("GET",),
            "/fault-log": ("GET",), "/actions/cut": ("POST",),
            "/actions/blackhole": ("POST",), "/actions/refuse": ("POST",),
        }
        if path not in routes:
            raise _HttpError("404 Not Found", f"no such path {path}")
        if method not in routes[path]:
            raise _HttpError("405 Method Not Allowed", f"{method} not allowed on {path}")
        if path == "/":
            return ok, {"faults": self._faults(), "stats": proxy.stats()}
        if path == "/stats":
            return ok, proxy.stats()
        if path == "/fault-log":
            query = environ.get("QUERY_STRING", "")
            since = 0
            for part in query.split("&"):
                key, _, value = part.partition("=")
                if key == "since":
                    if not value.isdigit():
                        raise _HttpError("400 Bad Request", "since must be an integer >= 0")
                    since = int(value)
            return ok, {"records": [r.to_dict() for r in proxy.fault_log[since:]]}
        if path == "/faults":
            if method == "GET":
                return ok, {"faults": self._faults()}
            if method == "DELETE":
                proxy.set_faults(())
                return ok, {"faults": []}
            body = self._body(environ)
            try:
                if isinstance(body, dict) and "faults" in body:
                    new = faults_from_list(body["faults"])
                elif method == "POST" and isinstance(body, dict):
                    new = (fault_from_dict(body),)
                else:
                    raise ValueError("body must be {\"faults\": [...]}"
                                     + (" or a single fault" if method == "POST" else ""))
            except ValueError as exc:
                raise _HttpError("400 Bad Request", str(exc)) from None
            proxy.set_faults(new if method == "PUT" else proxy.current_faults + new)
            return ok, {"faults": self._faults()}
        body = self._body(environ)
        if path == "/actions/cut":
            return ok, {"cut": proxy.cut_all()}
        if path == "/actions/blackhole":
            seconds = _seconds(body)
            proxy.blackhole(seconds)
            return ok, {"blackhole_seconds": seconds}
        seconds = _seconds(body)
        mode = body.get("mode", "reset")
        if mode not in ("reset", "hold"):
            raise _HttpError("400 Bad Request", "mode must be \"reset\" or \"hold\"")
        proxy.refuse(seconds, mode)
        return ok, {"refuse_seconds": seconds, "mode": mode}

    def _faults(self) -> list[dict[str, Any]]:
        return [fault_to_dict(f) for f in self.proxy.current_faults]
