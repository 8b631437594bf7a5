"""Recorded channels from files: WFDB, EDF/BDF, CSV, or a recording made by the rig (MCAP).

Every reader gives :class:`SourceChannel` s (name, unit, rate, physical values, where the
source's ADC was at a rail, and the source's resolution where it declares one), so the
playback devices do not care where samples came from. Real-rate pacing, resampling and
the encoding for each device live in ``hil.sim.playback.devices``.

Well-kept libraries read the formats (wfdb, edfio, the rig's own reader); only CSV is
read here (a header row of names, optional units in brackets, and a time column), and
OpenSignals text (BITalino: a JSON header line, ADC counts through the sensors' transfer
functions); no library reads either without pulling in a whole toolbox.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

TIME_COLUMNS = ("time_s", "t_s", "time", "t", "seconds", "timestamp")
MCAP_SUFFIXES = (".mcap",)
EDF_SUFFIXES = (".edf", ".bdf")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")


class ReplayError(ValueError):
    """A replay source is missing, unreadable or does not fit the rig; str() is one line."""


@dataclass
class SourceChannel:
    """One recorded channel as physical values on its own uniform grid."""

    name: str
    unit: str
    fs_hz: float
    values: np.ndarray  # (n,) float64, NaN where the source has no value
    saturated: np.ndarray  # (n,) bool: the source's ADC sat at a rail
    lsb: float | None = None  # physical size of one source count, where declared


def source_kind(path: Path) -> str:
    """"mcap", "edf", "csv" or "wfdb" from the name (a WFDB record may omit ``.hea``)."""
    suffix = path.suffix.lower()
    if suffix in MCAP_SUFFIXES:
        return "mcap"
    if suffix in EDF_SUFFIXES:
        return "edf"
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in (".hea", ".dat", ".mat") or path.with_suffix(".hea").exists() \
            or Path(str(path) + ".hea").exists():
        return "wfdb"
    raise ReplayError(f"{path}: not a WFDB record, EDF/BDF, CSV or .mcap recording")


def read_channels(path: str | Path) -> list[SourceChannel]:
    """Every channel of a WFDB record, EDF/BDF or CSV file."""
    p = Path(path)
    kind = source_kind(p)
    if kind == "wfdb":
        return _read_wfdb(p)
    if kind == "edf":
        return _read_edf(p)
    if kind == "csv":
        return _read_csv(p)
    raise ReplayError(f"{p}: an MCAP recording is read with hil.sim.playback.devices")


def _read_wfdb(path: Path) -> list[SourceChannel]:
    try:
        import wfdb
    except ImportError:  # an optional extra: say how to get it
        raise ReplayError("reading WFDB records needs the wfdb package "
                          "(pip install 'mmme-edge[replay]')") from None
    stem = path.with_suffix("") if path.suffix.lower() in (".hea", ".dat", ".mat") else path
    try:
        head = wfdb.rdheader(str(stem))
    except (OSError, ValueError) as exc:
        raise ReplayError(f"{stem}: cannot read the WFDB header ({exc})") from None
    # Signals whose data file is not there (PTB's Frank leads in .xyz) are left out.
    have = [j for j, f in enumerate(head.file_name) if (stem.parent / f).exists()]
    if not have:
        raise ReplayError(f"{stem}: none of the record's data files is there")
    try:
        rec = wfdb.rdrecord(str(stem), smooth_frames=False, physical=False, channels=have)
    except (OSError, ValueError) as exc:
        raise ReplayError(f"{stem}: cannot read the WFDB record ({exc})") from None
    out = []
    for j, name in enumerate(rec.sig_name):
        d = np.asarray(rec.e_d_signal[j], dtype=np.int64)
        fmt = str(rec.fmt[j])
        bits = int(rec.adc_res[j]) or _fmt_bits(fmt)
        zero = int(rec.adc_zero[j] or 0)
        lo, hi = zero - (1 << (bits - 1)), zero + (1 << (bits - 1)) - 1
        invalid = d == _wfdb_invalid(fmt)
        gain = float(rec.adc_gain[j]) or 200.0  # WFDB's default gain
        values = (d - float(rec.baseline[j])) / gain
        values[invalid] = np.nan
        sat = ((d <= lo) | (d >= hi)) & ~invalid
        out.append(SourceChannel(name, rec.units[j] or "", float(rec.fs) * rec.samps_per_frame[j],
                                 values, sat, 1.0 / gain))
    return out


def _fmt_bits(fmt: str) -> int:
    return {"8": 8, "16": 16, "24": 24, "32": 32, "61": 16, "80": 8, "160": 16, "212": 12,
            "310": 10, "311": 10, "508": 8, "516": 16, "524": 24}.get(fmt, 16)


def _wfdb_invalid(fmt: str) -> int:
    """The digital value WFDB uses for "no sample" in this storage format."""
    return -(1 << (_fmt_bits(fmt) - 1))


def _read_edf(path: Path) -> list[SourceChannel]:
    import edfio

    try:
        edf = edfio.read_edf(path)
    except (OSError, ValueError) as exc:
        raise ReplayError(f"{path}: cannot read the EDF/BDF file ({exc})") from None
    out = []
    for sig in edf.signals:
        dig = np.asarray(sig.digital)
        sat = (dig <= sig.digital_min) | (dig >= sig.digital_max)
        lsb = (sig.physical_max - sig.physical_min) / max(sig.digital_max - sig.digital_min, 1)
        out.append(SourceChannel(sig.label, sig.physical_dimension, float(sig.sampling_frequency),
                                 np.asarray(sig.data, dtype=np.float64), sat, abs(lsb)))
    return out


_UNIT = re.compile(r"^(.*?)\s*[\(\[]\s*([^\)\]]*)\s*[\)\]]\s*$")


# BITalino sensors' transfer functions (their datasheets): physical = (ADC / 2^n - 1/2) x
# VCC / gain, in volts, VCC 3.3 V. Other sensors stay in ADC counts (unit "adc").
_BITALINO = {"ECG": (1100.0, 1e3, "mV"), "EMG": (1009.0, 1e3, "mV"), "EEG": (41782.0, 1e6, "uV")}


def _read_opensignals(path: Path, lines: list[str]) -> list[SourceChannel]:
    """An OpenSignals (BITalino) text file: a JSON header line, then tab-separated rows."""
    import json

    try:
        head = next(iter(json.loads(lines[1].lstrip("# ")).values()))
        fs = float(head["sampling rate"])
        columns, labels = list(head["column"]), list(head["label"])
        sensors, bits = list(head.get("sensor", labels)), list(head["resolution"])
        rows = np.loadtxt([ln for ln in lines if not ln.startswith("#")], ndmin=2)
    except (IndexError, KeyError, ValueError, StopIteration, AttributeError) as exc:
        raise ReplayError(f"{path}: not a readable OpenSignals file ({exc})") from None
    out = []
    for label, sensor in zip(labels, sensors, strict=False):
        j = columns.index(label)
        n = int(bits[j])
        adc = rows[:, j]
        sat = (adc <= 0) | (adc >= 2**n - 1)
        if sensor.upper() in _BITALINO:
            gain, to_unit, unit = _BITALINO[sensor.upper()]
            values = (adc / 2**n - 0.5) * 3.3 / gain * to_unit
            out.append(SourceChannel(sensor.upper(), unit, fs, values, sat,
                                     3.3 / gain * to_unit / 2**n))
        else:
            out.append(SourceChannel(sensor or label, "adc", fs, adc, sat, 1.0))
    return out


def _read_csv(path: Path) -> list[SourceChannel]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ReplayError(f"{path}: {exc.strerror}") from None
    if text.startswith("# OpenSignals"):
        return _read_opensignals(path, text.splitlines())
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) < 3:
        raise ReplayError(f"{path}: a CSV needs a header row and at least two rows of samples")
    dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t ")
    header = next(csv.reader([lines[0]], dialect))
    names, units = [], []
    for h in header:
        m = _UNIT.match(h.strip())
        names.append((m.group(1) if m else h).strip())
        units.append(m.group(2).strip() if m else "")
    lower = [n.lower() for n in names]
    t_col = next((lower.index(c) for c in TIME_COLUMNS if c in lower), None)
    if t_col is None:
        raise ReplayError(f"{path}: no time column (one of {', '.join(TIME_COLUMNS)}, "
                          "in seconds) to take the sampling rate from")
    try:
        rows = np.array([[float(x) if x.strip() else np.nan for x in r]
                         for r in csv.reader(lines[1:], dialect)], dtype=np.float64)
    except ValueError as exc:
        raise ReplayError(f"{path}: a sample is not a number ({exc})") from None
    if rows.ndim != 2 or rows.shape[1] != len(names):
        raise ReplayError(f"{path}: rows do not all have {len(names)} columns")
    dt = np.diff(rows[:, t_col])
    step = float(np.median(dt))
    if not step > 0 or np.max(np.abs(dt - step)) > 0.01 * step:
        raise ReplayError(f"{path}: the time column is not uniform (median step {step:g} s); "
                          "resample it to a fixed rate first")
    fs = 1.0 / step
    return [SourceChannel(names[j], units[j], fs, rows[:, j], np.zeros(len(rows), bool))
            for j in range(len(names)) if j != t_col]


# ---------------------------------------------------------------- resampling


def resample(values: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from ``fs_in`` to ``fs_out`` along axis 0.

    A rate ratio that is not a small fraction (62.4725 Hz to 1000 Hz) goes through the
    nearest such fraction and then linear interpolation onto the exact output grid.
    """
    from scipy.signal import resample_poly

    x = np.asarray(values, dtype=np.float64)
    if fs_in == fs_out or x.shape[0] < 2:
        return x.copy()
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    y = resample_poly(x, ratio.numerator, ratio.denominator, axis=0, padtype="line")
    n_out = int(np.floor((x.shape[0] - 1) * fs_out / fs_in)) + 1
    fs_y = fs_in * ratio.numerator / ratio.denominator
    if abs(fs_y - fs_out) <= 1e-9 * fs_out:
        return y[:n_out]
    t_y = np.arange(y.shape[0]) / fs_y
    t_out = np.arange(n_out) / fs_out
    if y.ndim == 1:
        return np.interp(t_out, t_y, y)
    return np.stack([np.interp(t_out, t_y, y[:, j]) for j in range(y.shape[1])], axis=1)


def nearest_rows(n_out: int, fs_in: float, fs_out: float, n_in: int) -> np.ndarray:
    """For each output sample, the source sample nearest in time (to carry flags along)."""
    return np.minimum(np.rint(np.arange(n_out) * (fs_in / fs_out)).astype(np.int64), n_in - 1)


def fill_gaps(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values with each NaN replaced by the previous valid value, the NaN mask)."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return values, bad
    if bad.all():
        return np.zeros_like(values), bad
    idx = np.where(~bad, np.arange(values.size), 0)
    np.maximum.accumulate(idx, out=idx)
    first = int(np.argmax(~bad))
    idx[:first] = first  # leading gap: the first valid value
    return values[idx], bad
