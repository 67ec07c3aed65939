"""Importers: bring runs kept by other tools into a tracker store.

Each importer turns what another tool left behind into journal operations
(``core/ops.py``) and applies them through ``store.applier(run_id).apply(batch,
position)`` with deterministic synthetic positions, as ``core/upload.py`` does for a
store without journals: running an import again, or after an interruption, stores
nothing twice. ``neptune`` reads what the open-source Neptune exporter wrote.
"""
