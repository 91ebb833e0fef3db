"""Root test configuration: make the process gevent-ready before anything else."""

from gevent import monkey

monkey.patch_all()

import logging

import pykka
import pytest


@pytest.fixture(autouse=True)
def _no_actor_leaks() -> object:
    """Every test starts and ends with no running actor (teardown stops stragglers)."""
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=5)


logging.getLogger("wscore").setLevel(logging.DEBUG)
