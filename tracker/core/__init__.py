"""The single-process core: run object, operations, journal, writer, stores, read API.

Where a metric goes from ``run.log`` to disk, in file order: ``run.py`` (validate and
queue the operations ``ops.py`` describes) -> ``writer.py`` (drain the queue) ->
``batch.py`` (log calls into columns) -> ``journal.py`` (append a framed record) ->
``stores/`` (a store applies the record: ``stores/base.py`` is the ``Store`` protocol,
``stores/sqlite.py`` and ``stores/sqlite_apply.py`` the embedded SQLite store).
``reader.py`` reads back; ``replay.py`` recovers from journals. Maintenance:
``lookup.py`` (ids from what a user typed), ``export.py``, ``cleanup.py`` (gc),
``doctor.py``. Nothing here knows about frameworks or distribution.
"""
