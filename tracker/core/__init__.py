"""The single-process core: run object, operations, journal, writer, store, read API.

Where a metric goes from ``run.log`` to disk, in file order: ``run.py`` (validate and
queue) -> ``writer.py`` (drain the queue) -> ``journal.py`` (append a framed record) ->
``apply.py`` (turn records into rows) -> ``store.py`` (SQLite). ``reader.py`` reads
back; ``replay.py`` recovers from journals. Nothing here knows about frameworks or
distribution.
"""
