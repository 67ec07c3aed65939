"""``tracker import neptune`` into a team server: the same import, through HTTP, once."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("pyarrow", reason="the Neptune import reads Parquet (pip install pyarrow)")

import tracker
from tracker.cli import main

from ..unit.test_import_neptune import PROJECT, T0, row, series, write_parts
from .conftest import ServerProcess, make_token, token_env


def test_import_neptune_into_a_server(server: ServerProcess, tmp_path: Path) -> None:
    data = tmp_path / "exports" / "data"
    a = [row("a", "sys/custom_run_id", "string", string_value="a"), *series("a", "loss", range(10))]
    b = [
        row("b", "sys/forking/parent", "string", string_value="a"),
        row("b", "sys/forking/step", "float", float_value=4.0),
        *series("b", "loss", range(5, 9), T0 + 1000),
    ]
    write_parts(data, "b", [b])
    write_parts(data, "a", [a])
    with token_env(make_token(server.store, PROJECT)):
        for _attempt in range(2):  # the second adds nothing
            out = CliRunner().invoke(main, ["import", "neptune", str(data), "--store", server.url])
            assert out.exit_code == 0, out.output
        rb = tracker.read_run("b", store=server.url)
        assert rb.parent == ("a", 4)
        assert rb["loss"].fetch_values().step.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8]
        ra = tracker.read_run("a", store=server.url)
        assert ra["loss"].fetch_values(include_superseded=True).step.tolist() == list(range(10))
