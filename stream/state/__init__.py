"""Where the worker's entity states live, and how they survive a crash.

The one idea: the **changelog is the durable copy** of every entity state, and
everything local is a copy of a prefix of it. A changelog partition holds one
record per write of an entity (key `kind:id`, value the encoded state) plus a
partition's meta records (`_marks:<p>`, `_counts:<p>`); it is compacted, so it
keeps the latest value per key. A worker writes each touched entity once per
step, in producer batches, and only *after* the records are acknowledged does it
write them to its local store (`base.PartitionStore`: `memory`, or `rocksdb` on
the data directory), together with the changelog offset they reach. So the local
store is never ahead of the changelog: after a crash at any point it is at or
behind it, and recovery (`changelog.catch_up`) reads the changelog from the
store's offset to the partition's *true* end offset (the embedded broker lists a
wrong one, see `stream.app.tansu`) and is then equal to it.

See docs/architecture.md ("State, changelog and recovery") for how the worker
orders its writes and its offset commits around this.
"""
