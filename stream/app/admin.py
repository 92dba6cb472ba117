"""Topic administration: create every leadlag topic explicitly and check the partition counts at start-up.

Why explicitly: a broker that auto-creates a topic gives it its own default
partition count, and the worker needs partition p of every input topic, of
`leadlag.entities` and of the changelog to mean the same entities (an event
keyed by its entity's id already sits on its entity's partition, and one
worker owns partition p of every topic). So the worker creates its input, internal, changelog and output topics with
the configured count before it starts, and refuses to start on an existing
topic with another count (`TopicMismatch`, naming the setting to change).
Existence is read from the metadata of all topics, never by asking for one
by name, because that request itself may auto-create the topic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from stream.app.topics import Topics

if TYPE_CHECKING:
    from stream.settings import Settings

ENTITIES_TABLE = "entities"
"""Name of the worker's entity store; its changelog topic is `<app id>-entities-changelog`."""
TOPIC_ALREADY_EXISTS = 36
CREATED_VISIBLE_SECONDS = 30.0
"""How long created topics may take to appear in the metadata (Kafka creates them asynchronously)."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How a topic must look: its partition count, compaction and replication."""

    partitions: int
    compacted: bool = False
    replication_factor: int = 1


class TopicMismatch(RuntimeError):
    """An existing topic has another partition count than leadlag needs; the message names the fix."""


class TopicCreationFailed(RuntimeError):
    """The broker refused to create a topic; the message carries its error."""


def bootstrap_servers(broker: str) -> list[str]:
    """`host:port` entries from a `LEADLAG_BROKER` value (`kafka://a:9092;kafka://b:9092`, `a:9092,b:9092`)."""
    servers = []
    for part in broker.replace(";", ",").split(","):
        part = part.strip()
        if part:
            servers.append(part.split("://", 1)[1] if "://" in part else part)
    return servers


def client_options(settings: Settings | None) -> dict[str, Any]:
    """aiokafka connection options (security protocol, SASL, TLS) from the settings; none for PLAINTEXT."""
    if settings is None or settings.security_protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in {"SSL", "SASL_SSL"}:
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username or ""
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
    return options


def leadlag_topics(settings: Settings) -> dict[str, TopicSpec]:
    """Every topic the worker reads or writes, with the configured partition count.

    The five inputs, the internal `leadlag.entities` routing topic, the entity table's changelog and
    its totals (both compacted) and the dead letter have `LEADLAG_PARTITIONS` partitions (they are co-partitioned);
    the snapshot (compacted: latest value per key) and alert topics have one, so their order is total.
    """
    topics = Topics(settings.topic_prefix)
    n, rf = settings.partitions, settings.replication_factor
    specs = {name: TopicSpec(n, replication_factor=rf) for name in topics.inputs}
    specs[topics.entities] = TopicSpec(n, replication_factor=rf)
    specs[changelog_topic(settings.app_id, ENTITIES_TABLE)] = TopicSpec(n, compacted=True, replication_factor=rf)
    specs[totals_topic(settings.app_id, ENTITIES_TABLE)] = TopicSpec(n, compacted=True, replication_factor=rf)
    specs[topics.deadletter] = TopicSpec(n, replication_factor=rf)
    specs[topics.snapshots] = TopicSpec(1, compacted=True, replication_factor=rf)
    specs[topics.alerts] = TopicSpec(1, replication_factor=rf)
    return specs


def changelog_topic(app_id: str, table: str) -> str:
    """The changelog topic of a store (named as Faust names a table's: existing deployments keep theirs)."""
    return f"{app_id}-{table}-changelog"


def totals_topic(app_id: str, table: str) -> str:
    """The store's totals, marks and counts records again, without its entity records: what the workers
    that do not own a partition read of it (`stream.app.company`)."""
    return f"{app_id}-{table}-totals"


async def existing_partitions(admin: AIOKafkaAdminClient) -> dict[str, int]:
    """Partition count of every topic in the cluster (from metadata of all topics: never auto-creates one)."""
    described = await admin.describe_topics()
    return {str(topic["topic"]): len(topic["partitions"]) for topic in described if topic["error_code"] == 0}


def _mismatch_message(topic: str, found: int, wanted: int) -> str:
    return (
        f"topic {topic!r} has {found} partition(s) but leadlag is configured for {wanted}: "
        f"set LEADLAG_PARTITIONS={found} to use the existing topics, "
        "or choose a new LEADLAG_TOPIC_PREFIX (and LEADLAG_APP_ID) to start fresh ones"
    )


def check_partitions(existing: Mapping[str, int], topics: Mapping[str, TopicSpec]) -> None:
    """Raise `TopicMismatch` naming every existing topic whose partition count differs from its spec."""
    problems = [
        _mismatch_message(name, existing[name], spec.partitions)
        for name, spec in sorted(topics.items())
        if name in existing and existing[name] != spec.partitions
    ]
    if problems:
        raise TopicMismatch("; ".join(problems))


async def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, TopicSpec],
    *,
    settings: Settings | None = None,
    **client_kwargs: Any,
) -> list[str]:
    """Create the missing topics and check the existing ones; returns the names it created.

    `bootstrap` is a `LEADLAG_BROKER` value; `settings` supplies SASL/TLS options, and `client_kwargs`
    go to aiokafka's admin client as they are. Raises `TopicMismatch` before creating anything when an
    existing topic has another partition count, and `TopicCreationFailed` when the broker refuses one.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(bootstrap), **{**client_options(settings), **client_kwargs}
    )
    await admin.start()
    try:
        existing = await existing_partitions(admin)
        check_partitions(existing, topics)
        missing = {name: spec for name, spec in topics.items() if name not in existing}
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    name,
                    spec.partitions,
                    spec.replication_factor,
                    topic_configs={"cleanup.policy": "compact"} if spec.compacted else {},
                )
                for name, spec in missing.items()
            ]
        )
        failures = []
        for topic, error_code, *rest in response.topic_errors:
            if error_code not in (0, TOPIC_ALREADY_EXISTS):  # another worker may have created it just now
                message = rest[0] if rest and rest[0] else for_code(error_code).__name__
                failures.append(f"{topic!r}: {message}")
        if failures:
            raise TopicCreationFailed("the broker refused to create " + "; ".join(failures))
        await _wait_until_visible(admin, topics, set(missing))
        return sorted(missing)
    finally:
        await admin.close()


async def _wait_until_visible(admin: AIOKafkaAdminClient, topics: Mapping[str, TopicSpec], created: set[str]) -> None:
    """Wait until the created topics show in the metadata, then check them (a concurrent creator may differ)."""
    deadline = time.monotonic() + CREATED_VISIBLE_SECONDS
    while True:
        existing = await existing_partitions(admin)
        if created <= existing.keys():
            check_partitions(existing, topics)
            return
        if time.monotonic() > deadline:
            absent = sorted(created - existing.keys())
            raise TopicCreationFailed(f"topics not visible {CREATED_VISIBLE_SECONDS:.0f} s after creation: {absent}")
        await asyncio.sleep(0.2)
