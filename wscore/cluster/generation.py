"""Detecting a Redis that lost its data (SPEC §6: "A Redis that lost its data … is detected").

A restart without persistence, or a ``FLUSHALL``, leaves a Redis that answers
as if nothing happened: pub/sub and commands work, only the keys are gone. So
the deployment keeps one *generation* key, ``<prefix>:gen``, holding a random
token: the first node to start creates it, every node adopts it, and every
session script checks it (``WSDATALOST``) in the same atomic step as its write.
A node also calls :meth:`Generation.verify` whenever its writer reconnects.

After a loss, the node ends every session it holds (their resumes get 1006)
and calls :meth:`Generation.recover` to adopt a new generation, created by
whichever node gets there first.
"""

from __future__ import annotations

import logging
import secrets

from wscore.cluster.errors import RedisDataLost
from wscore.cluster.writer import RedisWriter

__all__ = ["Generation"]

log = logging.getLogger("wscore.cluster.generation")


class Generation:
    """The deployment's generation token, as this node knows it."""

    def __init__(self, writer: RedisWriter, *, prefix: str = "wscore") -> None:
        self.writer = writer
        self.key = f"{prefix}:gen"
        self._token: str | None = None

    @property
    def token(self) -> str:
        """The adopted token; :meth:`establish` must have run."""
        if self._token is None:
            raise RuntimeError("Generation.establish() has not run")
        return self._token

    def establish(self) -> str:
        """Adopt the deployment's generation, creating it if this Redis has none (node start)."""
        created = self.writer.execute("SET", self.key, secrets.token_hex(16), "NX")
        token = self.writer.execute("GET", self.key)
        if token is None:  # flushed between the two commands: try once more
            self.writer.execute("SET", self.key, secrets.token_hex(16), "NX")
            token = self.writer.execute("GET", self.key)
        self._token = token.decode() if isinstance(token, bytes) else str(token)
        if created:
            log.info("new deployment generation %s (a fresh or emptied Redis)", self._token)
        return self._token

    def verify(self) -> None:
        """Raise :class:`RedisDataLost` if the generation key is gone or changed since adoption."""
        found = self.writer.execute("GET", self.key)
        found = found.decode() if isinstance(found, bytes) else found
        if found != self.token:
            raise RedisDataLost(
                f"Redis lost its data: generation {self.token} is "
                + ("gone" if found is None else f"replaced by {found}")
            )

    def recover(self) -> str:
        """After :class:`RedisDataLost`: adopt the new generation (creating it if needed)."""
        old = self._token
        token = self.establish()
        log.warning("Redis data lost: generation %s replaced by %s", old, token)
        return token
