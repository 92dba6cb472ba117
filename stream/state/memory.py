"""The memory backend: a partition's states as a dict of bytes, gone with the process.

A worker on this backend recovers every partition it is assigned from the
changelog, from offset 0 (bounded by the number of entities: the changelog is
compacted). Packed bytes rather than decoded states keep the memory small
(about 70 bytes for a visitor, `stream.state.packing`); the worker decodes the
states it uses. Once the
partition's totals are loaded from their bucket records, the store sheds those
(`totals_loaded`): the live totals are their copy, and a store that must catch
up later (another worker wrote the partition meanwhile) reads it all again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from stream.state.base import BUCKET_PREFIX, META_PREFIX
from stream.state.packing import StatePacker


class MemoryPartition:
    """One partition's states in a dict (`PartitionStore`)."""

    __slots__ = ("_complete", "_offset", "_origin", "_packer", "_partition", "values")

    def __init__(self, partition: int, packer: StatePacker | None = None) -> None:
        self._partition = partition
        self._packer = packer or StatePacker()
        self._offset = 0
        self._complete = True
        self._origin: str | None = None
        self.values: dict[bytes, bytes] = {}
        """Entity states packed, meta records as written."""

    @property
    def partition(self) -> int:
        return self._partition

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def complete(self) -> bool:
        return self._complete

    def totals_loaded(self) -> None:
        """Forget the totals' bucket records (loaded into the live totals) and keep none from now on."""
        self._complete = False
        for key in [key for key in self.values if key.startswith(BUCKET_PREFIX)]:
            del self.values[key]

    def get(self, key: bytes) -> bytes | None:
        value = self.values.get(key)
        return None if value is None else self._packer.unpack(value)

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        unpack = self._packer.unpack
        return iter([(key, unpack(value)) for key, value in self.values.items() if key.startswith(prefix)])

    def write(self, entries: Mapping[bytes, bytes | None], offset: int) -> None:
        values = self.values
        shed = not self._complete
        pack = self._packer.pack
        for key, value in entries.items():
            if value is None or (shed and key.startswith(BUCKET_PREFIX)):
                values.pop(key, None)
            elif key.startswith(META_PREFIX):
                values[key] = value
            else:
                values[key] = pack(value)
        self._offset = offset

    def clear(self) -> None:
        self.values.clear()
        self._offset = 0
        self._complete = True
        self._origin = None

    @property
    def origin(self) -> str | None:
        return self._origin

    def set_origin(self, origin: str) -> None:
        self._origin = origin

    def close(self) -> None:
        self.values = {}


class MemoryBackend:
    """`StateBackend` whose stores live in memory only."""

    durable = False

    def __init__(self) -> None:
        self._packer = StatePacker()
        """One for every partition of this process: the dictionary is learnt once."""

    def open(self, partition: int) -> MemoryPartition:
        return MemoryPartition(partition, self._packer)
