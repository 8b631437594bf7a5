"""``mmme-hil bench features``: runs end to end and ends with one JSON line. The cost
figures themselves are printed, never asserted (a shared 2-core machine)."""

from __future__ import annotations

import json

import pytest

from hil import cli


def test_bench_runs_and_ends_with_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "features", "--json", "--duration", "8", "--no-neurokit"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    doc = json.loads(lines[-1])
    assert set(doc) == {"realtime_factor", "vs_neurokit2"}
    assert doc["realtime_factor"] > 0 and doc["vs_neurokit2"] is None


@pytest.mark.bench
def test_bench_figures_against_neurokit2(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("neurokit2")
    assert cli.main(["bench", "features", "--json", "--duration", "90"]) == 0
    out = capsys.readouterr().out
    with capsys.disabled():
        print("\n" + out)
    assert json.loads(out.strip().splitlines()[-1])["vs_neurokit2"] is not None
