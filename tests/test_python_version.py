"""The rigs run Python 3.10 (JetPack 6), 3.11 and 3.13; CI has only one of them.

vermin computes the minimum Python version each module needs from its syntax and the
standard-library names it uses (``tomllib``, ``datetime.UTC``, ``typing.Self``,
``except*``...). Everything the rig imports must run on 3.10.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# vermin has no ``__main__``: its console script, run by this interpreter.
VERMIN = [sys.executable, "-c", "import sys; from vermin.main import main; sys.exit(main())"]
PACKAGES = [p for p in ("edge", "sensors", "hil", "models", "fleet") if (ROOT / p).is_dir()]


def test_everything_the_rig_imports_runs_on_python_3_10() -> None:
    proc = subprocess.run(
        [*VERMIN, "--no-tips", "--violations", "--eval-annotations",
         "--target=3.10-", *PACKAGES],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_check_would_see_a_3_11_only_name(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("from datetime import UTC\n")
    proc = subprocess.run(
        [*VERMIN, "--no-tips", "--violations", "--target=3.10-",
         str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "datetime.UTC" in proc.stdout
