"""The RocksDB backend: a partition's states on the data directory, with the changelog offset they reach.

Each partition is one RocksDB database (`<data dir>/<app id>-entities/partition-<p>`)
written only with atomic write batches that carry the entities *and* the
changelog offset under `OFFSET_KEY`. The worker writes a batch only after the
changelog has acknowledged those records, so a copy found on disk after a crash
is a prefix of the changelog, and a restart reads just the changelog's tail
from the stored offset. The database also records the broker cluster it was
built from: a copy of another cluster's changelog (a restarted embedded broker
is an empty one, with a new cluster id), or with an offset past the changelog's
end, is dropped and rebuilt from the changelog (`stream.state.changelog`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

LOCAL_PREFIX = b"\x00"
"""Keys of the database itself, never in the changelog (no entity or meta key starts with NUL)."""
OFFSET_KEY = LOCAL_PREFIX + b"changelog-offset"
"""Where a partition's database keeps its changelog offset."""
ORIGIN_KEY = LOCAL_PREFIX + b"changelog-origin"
"""The broker cluster id the copy was built from (`PartitionStore.origin`)."""
WRITE_BUFFER_BYTES = 4 * 1024 * 1024
"""Memtable size per partition (RocksDB's default, 64 MiB, would hold a partition's whole state in memory)."""


def options() -> Options:
    """Raw bytes in and out; small memtables, so the state lives on disk and the worker's memory stays small."""
    opts = Options(raw_mode=True)
    opts.set_write_buffer_size(WRITE_BUFFER_BYTES)
    opts.set_max_write_buffer_number(2)
    return opts


class RocksPartition:
    """One partition's states in a RocksDB database (`PartitionStore`)."""

    __slots__ = ("_offset", "_partition", "db", "path")

    def __init__(self, partition: int, path: Path) -> None:
        self._partition = partition
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = Rdict(str(path), options())
        stored = self.db.get(OFFSET_KEY)
        self._offset = 0 if stored is None else int(struct.unpack(">q", stored)[0])

    @property
    def partition(self) -> int:
        return self._partition

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def complete(self) -> bool:
        return True

    def get(self, key: bytes) -> bytes | None:
        value = self.db.get(key)
        assert value is None or isinstance(value, bytes)
        return value

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.db.items(from_key=prefix) if prefix else self.db.items():
            assert isinstance(key, bytes)  # raw mode: bytes in, bytes out
            assert isinstance(value, bytes)
            if not key.startswith(prefix):
                break
            if not key.startswith(LOCAL_PREFIX):
                yield key, value

    def write(self, entries: Mapping[bytes, bytes | None], offset: int) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in entries.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(OFFSET_KEY, struct.pack(">q", offset))
        self.db.write(batch)
        self._offset = offset

    def totals_loaded(self) -> None:
        """Nothing to shed: the database is on disk, and a restart reads only the changelog's tail."""

    def clear(self) -> None:
        entries: dict[bytes, bytes | None] = {key: None for key, _ in self.items()}
        entries[ORIGIN_KEY] = None
        self.write(entries, 0)

    @property
    def origin(self) -> str | None:
        stored = self.db.get(ORIGIN_KEY)
        return None if stored is None else bytes(stored).decode()

    def set_origin(self, origin: str) -> None:
        self.db[ORIGIN_KEY] = origin.encode()

    def close(self) -> None:
        self.db.close()


class RocksBackend:
    """`StateBackend` keeping each partition in a RocksDB database under `directory`."""

    durable = True

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def open(self, partition: int) -> RocksPartition:
        return RocksPartition(partition, self.directory / f"partition-{partition}")
