"""Fixtures of the integration suite: one real embedded broker for the session, fresh names per test.

Every test shares the session's broker (starting one takes well under a second, but
Faust workers joining it are the slow part, so nothing is gained by more) and isolates
itself by a unique topic prefix and app id. The broker is stopped at the end of the
session even when tests fail; a test that needs its own broker starts one with
`EmbeddedBroker()` as a context manager.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from stream.broker import EmbeddedBroker
from stream.broker import free_port as pick_free_port


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[EmbeddedBroker]:
    """The session's embedded Tansu broker on a free loopback port (`.bootstrap`, `.url`); always stopped."""
    with EmbeddedBroker() as broker:
        yield broker


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses, e.g. `t3f9a0c1b2d4e.`: topics and app ids never collide between tests."""
    return f"t{uuid.uuid4().hex[:12]}."


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on right now."""
    return pick_free_port()
