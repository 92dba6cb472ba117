"""Logs never print event payloads or credentials (stream/app/worker.py)."""

from __future__ import annotations

import logging

import pytest

from stream.app.worker import quiet_payload_logs, redacted_broker_url


@pytest.mark.parametrize(
    ("broker", "printed"),
    [
        ("kafka://broker-1:9092", "kafka://broker-1:9092"),
        ("broker-1:9092,broker-2:9092", "broker-1:9092,broker-2:9092"),
        ("kafka://leadlag:hunter2@broker-1:9092", "kafka://***@broker-1:9092"),
        (
            "kafka://leadlag:p@ss@broker-1:9092;kafka://token@broker-2:9092",
            "kafka://***@broker-1:9092;kafka://***@broker-2:9092",
        ),
        ("leadlag:hunter2@broker-1:9092", "***@broker-1:9092"),
    ],
)
def test_the_broker_url_is_printed_without_credentials(broker: str, printed: str) -> None:
    assert redacted_broker_url(broker) == printed


def test_aiokafka_never_logs_a_record_it_sends_even_at_debug_level(caplog: pytest.LogCaptureFixture) -> None:
    quiet_payload_logs()
    producer_log = logging.getLogger("aiokafka.producer.producer")
    with caplog.at_level(logging.DEBUG, logger="aiokafka.producer.producer"):
        # the very call aiokafka makes in AIOKafkaProducer.send
        producer_log.debug("Sending (key=%s value=%s) to %s", b"c-1", b'{"email":"someone@example.com"}', "tp")
        producer_log.debug("Kafka producer started")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["Kafka producer started"]
