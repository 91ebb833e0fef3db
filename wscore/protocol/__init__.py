"""The pure protocol core: bytes and text in, values and events out.

Nothing in this package touches a socket, a greenlet, an actor or the clock:
time is passed in by the caller. Modules:

- :mod:`wscore.protocol.codes`     error codes, close codes, reserved events
- :mod:`wscore.protocol.frames`    RFC 6455 framing (decoder, encoders, handshake keys)
- :mod:`wscore.protocol.envelope`  the JSON envelope of SPEC §3
- :mod:`wscore.protocol.session`   a session's state machine and its numbered stream

The package ``__init__`` imports nothing on purpose, so that
:mod:`wscore.errors` can depend on :mod:`wscore.protocol.codes` without a cycle.
"""

__all__: list[str] = []
