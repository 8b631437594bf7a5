"""A minimal Curry 8 writer (raw float ``.cdt`` + ``.cdt.dpa`` + ``.cdt.cef``) for fixtures.

No library writes Curry (MNE and curryreader only read it), so this writes the three
files by hand, modelled on the Curry 8 test file MNE keeps (``../shared/data/real/eeg``):
samples as little-endian float32, sample-major (``DataSampOrder = SAMP``), one EEG group
with labels and sensor positions in the parameter file, events in the event file's
``NUMBER_LIST`` (sample, 0, type, -1, start, end, 0...). What it writes is checked by
reading it back with ``mne.io.read_raw_curry`` in the tests.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_LIST_HEAD = """   ListDescription      = {desc}
   ListUnits            = {units}
   ListNrColumns        =  {cols}
   ListNrRows           =  {rows}
   ListNrTimepts        =  1
   ListNrBlocks         =  1
   ListBinary           =  0
   ListType             =  {ltype}
   ListTrafoType        =  0
   ListGridType         =  2
   ListFirstColumn      =  1
   ListIndexMin         = -1
   ListIndexMax         = -1
   ListIndexAbsMax      = -1
"""


def _section(name: str, head: str, rows: list[str]) -> str:
    return (f"{name} START\n{head}{name} END\n\n"
            f"{name} START_LIST\t# Do not edit!\n" + "".join(r + "\n" for r in rows)
            + f"{name} END_LIST\n\n")


def write_curry8(path: str | Path, data_uv: np.ndarray, labels: Sequence[str], fs_hz: float,
                 start: datetime.datetime, events: Sequence[tuple[int, int]] = ()) -> Path:
    """Write ``path`` (``*.cdt``) plus ``.dpa`` and ``.cef``; events are (sample, code)."""
    path = Path(path)
    x = np.ascontiguousarray(data_uv, dtype="<f4")
    n, c = x.shape
    if len(labels) != c:
        raise ValueError(f"{c} columns but {len(labels)} labels")
    x.tofile(path)
    # Sensor positions on a sphere: readers need one per EEG-group channel.
    ang = np.linspace(0, 2 * np.pi, c, endpoint=False)
    pos = [f" {80 * np.cos(a):.1f}\t {80 * np.sin(a):.1f}\t 100.0" for a in ang]
    dpa = f"""\ufeffDATA_PARAMETERS START
   DataGuid             = {{0B86B22B-1A49-411A-9657-4A4BDA3D3ED8}}
   CurrentSessionLabel  ={' '}
   DataByteOrder        = INTEL
   DataSampOrder        = SAMP
   AmplifierInfo        ={' '}
   Comments             = mmme-edge fixture (hil/sim/curry.py)
   FileVersion          =  800
   NumSessions          =  1
   CurrentSession       =  0
   DataFormat           =  6
   FrequencyDomain      =  0
   NumSamples           =  {n}
   NumTrials            =  1
   NumChannels          =  {c}
   NumGroups            =  1
   NumMagGroups         =  0
   NumElGroups          =  1
   NumLinesSkip         =  0
   NumColumnsSkip       =  0
   DecimalSymbol        =  0
   StartYear            =  {start.year}
   StartMonth           =  {start.month}
   StartDay             =  {start.day}
   StartHour            =  {start.hour}
   StartMin             =  {start.minute}
   StartSec             =  {start.second}
   StartMillisec        =  {start.microsecond // 1000}
   StartOffsetUTCMin    =  0
   SampleTimeUsec       =  {1e6 / fs_hz:g}
   SampleFreqHz         =  {fs_hz:g}
   TriggerOffsetUsec    =  0
   TriggerOffsetHz      =  0
DATA_PARAMETERS END

DEVICE_PARAMETERS START
   DataUnit             = uV
   NumChanThisGroup     =  {c}
   NumSensorsThisGroup  =  {c}
   CommonOffset         =  0
   NumRefChannels       =  0
   CommonScale          =  1
DEVICE_PARAMETERS END

"""
    dpa += _section("LABELS", _LIST_HEAD.format(desc="SensorLabels", units="", cols=260,
                                                rows=c, ltype=5), list(labels))
    dpa += _section("SENSORS", _LIST_HEAD.format(desc="Sensors", units="mm", cols=3, rows=c,
                                                 ltype=1), pos)
    Path(f"{path}.dpa").write_text(dpa, encoding="utf-8")
    rows = [f"  {s}\t 0\t {code}\t-1\t {s}\t {s}\t 0\t 0\t 0\t 0\t 0" for s, code in events]
    cef = "\ufeff" + _section("NUMBER_LIST", _LIST_HEAD.format(
        desc="event numbers", units="", cols=11, rows=len(rows), ltype=0), rows)
    cef += _section("REMARK_LIST", _LIST_HEAD.format(
        desc="event annotations", units="", cols=260, rows=len(rows), ltype=5),
        [""] * len(rows))
    Path(f"{path}.cef").write_text(cef, encoding="utf-8")
    return path
