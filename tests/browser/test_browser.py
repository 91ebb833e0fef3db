"""The browser client in real headless Chromium, through the sandbox proxy (SPEC §9)."""

from __future__ import annotations

from typing import Any

import gevent.event
from browser_helpers import driver_config, finish_driver, run_driver, start_driver

from wscore import WsServer
from wscore.client import WsClient, WsClientConfig
from wscore.sandbox.api import ProxyHandle


def _texts(prefix: str, a: int, b: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(a, b)]


def test_two_pages_chat_through_resets_and_a_blackhole(chat_server: WsServer, net: ProxyHandle) -> None:
    r = run_driver("chat", driver_config(chat_server, net))
    b = r["b"]
    assert b["got"] == _texts("m", 0, 90)  # every message, once, in order
    assert b["sessionId"] == r["infoB"]["sessionId"] and b["connected"]
    resumes = [h for h in b["hooks"] if h[0] == "resume"]
    assert len(resumes) >= 2  # one after the reset, one after the blackhole
    assert not [h for h in b["hooks"] if h[0] == "sessionLost"]
    assert r["reply"] == {"during": "outage"}  # the request made during the outage was answered
    assert len([h for h in b["hooks"] if h[0] == "disconnect"]) >= 2  # the link really broke
    assert r["a"]["hooks"] == [["connect", False]]  # the direct page never noticed


def test_a_reload_resumes_the_tabs_session(chat_server: WsServer, net: ProxyHandle) -> None:
    r = run_driver("reload", driver_config(chat_server, net))
    assert r["after"]["resumed"] is True
    assert r["after"]["sessionId"] == r["before"]["sessionId"]
    assert r["after"]["missed"] >= 10
    assert r["b"]["got"] == _texts("m", 10, 20)  # only what it missed: nothing delivered twice
    assert r["b"]["replayed"] == 10
    # The send left unacknowledged by the reload was kept in sessionStorage and ran exactly once.
    assert r["a"]["got"] == ["b-unacked", "b-after"]


def test_back_forward_cache_detaches_and_resumes(chat_server: WsServer, net: ProxyHandle) -> None:
    r = run_driver("bfcache", driver_config(chat_server, net))
    assert r["hidden"] is False
    assert r["b"]["hooks"] == [["connect", False], ["disconnect", None], ["connect", True], ["resume", 5]]
    assert r["b"]["got"] == _texts("m", 0, 5) and r["b"]["replayed"] == 5
    assert r["b"]["sessionId"] == r["before"]["sessionId"]  # detached by 3001, not ended


def test_online_and_visible_reconnect_and_probe_at_once(chat_server: WsServer, net: ProxyHandle) -> None:
    r = run_driver("online", driver_config(chat_server, net))
    kinds = [h[0] for h in r["b"]["hooks"]]
    assert kinds == ["connect", *["disconnect", "connect", "resume"] * 3]
    assert r["b"]["sessionId"] == r["before"]["sessionId"] and r["b"]["connected"]


def test_a_duplicated_tab_gets_its_own_session(chat_server: WsServer, net: ProxyHandle) -> None:
    r = run_driver("duplicate", driver_config(chat_server, net))
    assert r["copied"] == 1  # the copy started with the original's stored session
    assert r["dup"]["resumed"] is False
    assert r["dup"]["sessionId"] != r["original"]["sessionId"]
    assert r["b"]["hooks"] == [["connect", False]]  # the original was not taken over (no 4000)
    assert r["b"]["got"] == ["d1", "d2", "from-copy"]
    assert r["copy"]["got"] == ["d1", "d2", "from-original"]
    assert sorted(r["a"]["got"]) == ["from-copy", "from-original"]


def test_the_demo_page_end_to_end(demo_server: WsServer) -> None:
    r = run_driver("demo", {"http": f"http://127.0.0.1:{demo_server.port}"})
    away = [f"Alicewhile you were away {i}" for i in range(1, 6)]
    assert r["bob"] == ["Alicehello Bob", "mehi Alice", *away, "meback, and I missed nothing"]
    assert r["alice"] == ["mehello Bob", "Bobhi Alice", *[f"me{t[5:]}" for t in away],
                          "Bobback, and I missed nothing"]
    assert r["members"] == ["Alice", "Bob"]
    assert r["replayedNote"] == "5 messages you missed were replayed"
    assert r["replayedLines"] == 5 and r["state"] == "resumed"


def test_token_provider_refreshes_in_band_before_expiry(auth_server: WsServer, net: ProxyHandle) -> None:
    r = run_driver("refresh", driver_config(auth_server, net))
    assert r["info"]["expiresAt"] is not None
    assert r["hooks"] == []  # never expired (no 1005 / 4005), never dropped
    assert r["reply"] == "still here"
    seen = auth_server.authenticator.seen  # type: ignore[union-attr]
    assert seen[:5] == [f"alice:{i}" for i in range(1, 6)]  # the handshake, then sys.auth refreshes


def test_browser_and_python_clients_share_a_room(chat_server: WsServer, net: ProxyHandle) -> None:
    got: list[str] = []
    ready = gevent.event.Event()
    done = gevent.event.Event()

    def on_message(payload: Any) -> None:
        got.append(payload["text"])
        if payload["text"] == "js-ready":
            ready.set()
        if len(got) == 21:
            done.set()

    py = WsClient(chat_server.url, config=WsClientConfig(request_timeout=10))
    py.on("chat.new_message", on_message)
    py.connect()
    py.request("room.join", {"roomId": "r4"})
    proc = start_driver("interop", driver_config(chat_server, net))
    try:
        assert ready.wait(60), "the browser page never joined"
        for text in _texts("py-", 0, 20):
            py.send("chat.message", {"roomId": "r4", "text": text})
        assert done.wait(60), f"the Python client got only {got}"
        py.send("chat.message", {"roomId": "r4", "text": "py-done"})
        r = finish_driver(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        py.close()
    assert got == ["js-ready", *_texts("js-", 0, 20)]
    assert r["b"]["got"] == [*_texts("py-", 0, 20), "py-done"]
