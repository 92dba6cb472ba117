"""Entity states kept in memory, compressed with a dictionary learnt from the first states seen.

A visitor's state is about 230 bytes of JSON, and most of it repeats what
every other state says (the layout, the kind, channel names, the id and time
formats). Compressed one by one with zstd and a dictionary trained on this
process's first states, it is about 70 bytes, for about 4 µs to pack and 3 µs
to unpack (measured on 1,000,000 simulated events). The in-memory stores, which
hold every entity of their partitions as bytes (`stream.replay.EncodedStore`,
`stream.state.memory`), keep states packed; the changelog and RocksDB keep the
codec's bytes as they are (RocksDB compresses its own blocks).

Until the dictionary is trained, states are kept as they came; `unpack` tells
the two apart by zstd's frame magic, which a codec payload (a JSON array) never
starts with. Packed bytes are only read back by the process that packed them:
the dictionary is never written anywhere. docs/architecture.md
("The hot path") gives the figures.

Bound: the samples kept for training (at most `MAX_SAMPLES` states, dropped once
the dictionary is trained) and one dictionary of `DICTIONARY_BYTES`.
"""

from __future__ import annotations

import zstandard

from stream.state.base import compact

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
FIRST_SAMPLES = 2_000
"""States collected before the first attempt to train the dictionary."""
MAX_SAMPLES = 16_000
"""Training is tried again with twice the samples when zstd finds too few to learn from; past this, never again
(the states stay as they are: correct, only larger)."""
DICTIONARY_BYTES = 16 * 1024
LEVEL = 3
"""zstd's default level: at these sizes it packs a little smaller than level 1 for the same time."""


class StatePacker:
    """Packs and unpacks entity state bytes for one process (`pack` learns from what it is given first)."""

    __slots__ = ("_compressor", "_decompressor", "_samples", "_train_at")

    def __init__(self) -> None:
        self._compressor: zstandard.ZstdCompressor | None = None
        self._decompressor: zstandard.ZstdDecompressor | None = None
        self._samples: list[bytes | bytearray | memoryview] = []  # the type zstandard's stub asks for
        self._train_at = FIRST_SAMPLES

    @property
    def trained(self) -> bool:
        return self._compressor is not None

    def pack(self, data: bytes) -> bytes:
        compressor = self._compressor
        if compressor is not None:
            return compact(compressor.compress(data))  # zstandard's bytes keep the room of the worst case
        if self._train_at <= MAX_SAMPLES:
            self._samples.append(data)
            if len(self._samples) >= self._train_at:
                self._train()
        return data

    def unpack(self, stored: bytes) -> bytes:
        if stored[:4] != ZSTD_MAGIC:
            return stored
        assert self._decompressor is not None, "packed bytes come from this packer, once trained"
        return self._decompressor.decompress(stored)

    def _train(self) -> None:
        try:
            dictionary = zstandard.train_dictionary(DICTIONARY_BYTES, self._samples)
        except zstandard.ZstdError:
            self._train_at *= 2  # too little to learn from yet (zstd needs enough distinct content)
            if self._train_at > MAX_SAMPLES:
                self._samples = []
            return
        self._samples = []
        self._compressor = zstandard.ZstdCompressor(
            level=LEVEL, dict_data=dictionary, write_checksum=False, write_dict_id=False
        )
        self._decompressor = zstandard.ZstdDecompressor(dict_data=dictionary)
