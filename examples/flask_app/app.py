"""A Flask app and the wscore chat on one port (docs/wsgi.md).

* wscore's own listener: ``wscore run examples.flask_app.app:server --port 8080``
* gunicorn's gevent worker:
  ``gunicorn -k gevent -w 1 --bind 127.0.0.1:8080 examples.flask_app.app:application``

Either way, on the one port: ``/`` (a Flask page that loads ``/wscore.js`` and
chats in a room), ``GET /api/status`` and ``POST /api/echo`` (Flask, JSON) are
Flask's; the WebSocket path ``/ws``, ``/healthz`` and ``/wscore.js`` are wscore's.
Request bodies (``POST /api/echo``, forms, uploads up to ``max_http_body_bytes``)
and keep-alive work under ``wscore run`` and under gunicorn alike. Flask is a dev
dependency of wscore, not a dependency: install it for your own app.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, render_template_string, request

from examples.chat.app import build_chat_server
from wscore import WsServer, WsServerConfig

__all__ = ["application", "build", "flask_app", "server"]

flask_app = Flask(__name__)

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>{{ title }}</title>
<h1>{{ title }}</h1>
<p id="state">connecting…</p>
<form id="send"><input id="text" autocomplete="off" placeholder="say something"> <button>send</button></form>
<ul id="log"></ul>
<script type="module">
import { WsClient } from "/wscore.js";
const room = {{ room|tojson }};
const client = new WsClient(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
const say = (text) => document.getElementById("log").append(
  Object.assign(document.createElement("li"), { textContent: text }));
client.on("chat.new_message", (p) => say(`${p.sender}: ${p.text}`));
client.onConnect(async (info) => {
  document.getElementById("state").textContent = info.resumed ? "resumed" : "connected";
  if (!info.resumed) await client.request("room.join", { roomId: room }); // a new session is in no room
});
client.onDisconnect(() => { document.getElementById("state").textContent = "reconnecting…"; });
document.getElementById("send").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = document.getElementById("text");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  client.request("chat.message", { roomId: room, text }).then(() => say(`me: ${text}`));
});
await client.connect();
</script>
"""


@flask_app.get("/")
def index() -> str:
    return render_template_string(PAGE, title="Flask + wscore on one port", room="lobby")


@flask_app.get("/api/status")
def status() -> Any:
    # A Flask route that reads the wscore server in the same process.
    return jsonify(app="flask", wscore=server.stats())


@flask_app.post("/api/echo")
def echo() -> Any:
    # A request with a body: read by wscore's listener (or gunicorn) for Flask.
    return jsonify(echo=request.get_json(force=True))


def build(config: WsServerConfig) -> WsServer:
    """The chat server for ``config`` with the Flask app mounted on every other path."""
    chat = build_chat_server(config)
    chat.mount(flask_app)
    return chat


server = build(WsServerConfig.dev(port=8080))
#: The WSGI entry for gunicorn's gevent worker (one process: sessions live in it).
application = server.wsgi_app()

if __name__ == "__main__":
    server.serve_forever()
