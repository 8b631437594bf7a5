"""Readers for the MMME corpus's release layout: Curry 8 / Neuroscan EEG, BIOPAC .mat, TIFF frames.

Per session the release holds (the study's data-structure figure):

- EEG: Neuroscan Curry 8 (``*.cdt`` with ``.cdt.dpa`` and ``.cdt.cef``), 64 EEG channels
  plus HEO, VEO, EKG, EMG and a Trigger channel, 1000 Hz. Read with MNE
  (``read_raw_curry``, which needs ``curryreader``); Neuroscan ``.cnt`` with
  ``read_raw_cnt``. Nothing here parses those formats by hand.
- Polygraph: BIOPAC MP160 exported as MATLAB ``.mat``, 1000 Hz, 17 columns in the order
  of :data:`BIOPAC_COLUMNS`; columns 9-16 are the digital STP inputs 0..7 (the trigger
  bits, bit i = input i). Read with ``scipy.io.loadmat``.
- Camera: one ``.tif`` per frame named ``Year-Month-Day-Hour-Minute-Second-Millisecond-
  Code-Marker``: the camera PC's wall clock, the camera's frame counter (it wraps) and the
  marker value at capture. Read with OpenCV.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BIOPAC_COLUMNS = (
    "PPG", "RSP", "EMG A", "SKT A", "EDA", "ECG", "EMG B", "SKT B",
    *(f"STP Input {i}" for i in range(8)), "ECG rate")
# The rig's names for the analogue columns (features find ECG/PPG/RSP/EDA/SKT by name).
HUB_NAMES = ("PPG", "RSP", "EMG A", "SKT", "EDA", "ECG", "EMG B", "SKT B")
HUB_UNITS = ("V", "V", "mV", "degC", "uS", "mV", "mV", "degC")
STP_COLUMNS = slice(8, 16)
TRIGGER_NAMES = ("trigger", "trig", "sti 014", "stim", "status")
FRAME_NAME = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})-(\d{1,2})-(\d{1,2})-(\d{1,2})-(\d{1,3})-(\d+)-(\d+)$")
_UNIT_WORDS = {"microsiemens": "uS", "deg c": "degC", "volts": "V", "millivolts": "mV",
               "mv": "mV", "bpm": "bpm"}


class LayoutError(ValueError):
    """A file of the session is missing, unreadable or not in the documented layout."""


# ---------------------------------------------------------------- EEG


@dataclass
class EegFile:
    path: Path
    fs_hz: float
    channels: list[str]
    units: list[str]
    data: np.ndarray  # (n, c) float64 in ``units`` (uV for voltage channels)
    trigger_channel: int | None  # column holding the marker code, if any
    annotations: list[tuple[float, str]]  # (onset s from the first sample, description)
    meas_date: datetime.datetime | None
    reader: str

    @property
    def trigger(self) -> np.ndarray | None:
        if self.trigger_channel is None:
            return None
        return np.round(self.data[:, self.trigger_channel]).astype(np.int64)


def read_eeg(path: str | Path) -> EegFile:
    """A Curry 8 (``.cdt``) or Neuroscan (``.cnt``) file through MNE, values in uV."""
    import mne
    from mne.io.constants import FIFF

    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".cdt":
            raw = mne.io.read_raw_curry(path, preload=True, verbose="error")
            reader = "mne.io.read_raw_curry"
        elif suffix == ".cnt":
            try:
                raw = mne.io.read_raw_cnt(path, preload=True, verbose="error")
            except Exception:  # 16/32-bit detection can fail on short files
                raw = mne.io.read_raw_cnt(path, data_format="int16", preload=True,
                                          verbose="error")
            reader = "mne.io.read_raw_cnt"
        else:
            raise LayoutError(f"{path.name}: not a Curry 8 (.cdt) or Neuroscan (.cnt) file")
    except ImportError as exc:
        raise LayoutError(f"{path.name}: {exc} (pip install 'mmme-edge[mmme]')") from None
    except LayoutError:
        raise
    except Exception as exc:  # MNE raises many kinds for a damaged or partial file
        raise LayoutError(f"{path.name}: cannot read EEG ({type(exc).__name__}: {exc})") from None
    data = raw.get_data().T
    units = []
    for j, ch in enumerate(raw.info["chs"]):
        if ch["unit"] == FIFF.FIFF_UNIT_V:
            data[:, j] *= 1e6
            units.append("uV")
        else:
            units.append("au")
    names = list(raw.ch_names)
    trig = next((j for j, n in enumerate(names) if n.strip().lower() in TRIGGER_NAMES), None)
    if trig is not None:
        units[trig] = "code"
    anns = [(float(a["onset"]) - raw.first_time, str(a["description"]))
            for a in raw.annotations]
    md = raw.info["meas_date"]
    return EegFile(path, float(raw.info["sfreq"]), names, units, data, trig, anns,
                   md.replace(tzinfo=None) if md is not None else None, reader)


# ---------------------------------------------------------------- polygraph


@dataclass
class PolygraphFile:
    path: Path
    fs_hz: float
    labels: list[str]
    units: list[str]
    data: np.ndarray  # (n, 17) float64
    notes: list[str] = field(default_factory=list)

    @property
    def code(self) -> np.ndarray:
        """The marker code from the STP inputs (bit i = input i; a bit is set above half
        of the digital channels' high level: 5 V, or 1 in a 0/1 export)."""
        bits = self.data[:, STP_COLUMNS]
        high = 5.0 if np.nanmax(bits, initial=0.0) > 1.5 else 1.0
        on = bits > high / 2
        return (on * (1 << np.arange(8))).sum(axis=1).astype(np.int64)


def _strings(x: object) -> list[str]:
    a = np.asarray(x, dtype=object).ravel()
    return [str(np.asarray(v).ravel()[0]) if np.asarray(v).size else "" for v in a] \
        if a.dtype == object else [str(v) for v in a]


def read_polygraph(path: str | Path) -> PolygraphFile:
    """A BIOPAC MP160 ``.mat`` export: the 17 documented columns at 1000 Hz (``isi`` ms
    sets the rate when present)."""
    from scipy.io import loadmat

    path = Path(path)
    try:
        m = loadmat(path)
    except Exception as exc:
        raise LayoutError(f"{path.name}: not a readable MATLAB file ({exc})") from None
    arrays = {k: v for k, v in m.items() if not k.startswith("__") and isinstance(v, np.ndarray)
              and v.ndim == 2 and v.dtype.kind in "fiu" and 17 in v.shape and v.size > 17}
    key = "data" if "data" in arrays else next(iter(arrays), None)
    if key is None:
        shapes = {k: getattr(v, "shape", None) for k, v in m.items() if not k.startswith("__")}
        raise LayoutError(f"{path.name}: no 17-column data array (found {shapes}); the "
                          f"BIOPAC export has columns {', '.join(BIOPAC_COLUMNS)}")
    data = arrays[key].astype(np.float64)
    if data.shape[1] != 17:
        data = data.T
    fs = 1000.0
    if "isi" in m:
        isi = float(np.asarray(m["isi"]).ravel()[0])
        unit = _strings(m.get("isi_units", ["ms"]))[0].strip().lower() if "isi_units" in m \
            else "ms"
        fs = 1.0 / (isi * {"ms": 1e-3, "s": 1.0, "us": 1e-6}.get(unit, 1e-3))
    labels = _strings(m["labels"]) if "labels" in m else list(BIOPAC_COLUMNS)
    if len(labels) != 17:
        labels = list(BIOPAC_COLUMNS)
    units = _strings(m["units"]) if "units" in m else []
    units = [_UNIT_WORDS.get(u.strip().lower(), u.strip()) for u in units] \
        if len(units) == 17 else [*HUB_UNITS, *("V",) * 8, "bpm"]
    # The documented order is what the importer relies on: say so if the labels disagree.
    notes = []
    wants = ("PPG", "RSP", "EMG", "SKT", "EDA", "ECG", "EMG", "SKT")
    if not all(g.strip().upper().startswith(w) for w, g in zip(wants, labels, strict=False)):
        notes.append(f"{path.name}: column labels {labels[:8]} differ from the documented "
                     f"order {', '.join(BIOPAC_COLUMNS[:8])}; read in the documented order")
    return PolygraphFile(path, fs, labels, units, data, notes)


# ---------------------------------------------------------------- camera frames


@dataclass
class FrameList:
    paths: list[Path]
    wall: list[datetime.datetime]  # camera PC clock per frame
    counter: np.ndarray  # int64, as named (wraps)
    marker: np.ndarray  # int64
    unnamed: list[str] = field(default_factory=list)  # .tif files not named by the convention

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def wall_ms(self) -> np.ndarray:
        """Camera PC time in ms since the first frame's midnight (int64)."""
        if not self.wall:
            return np.zeros(0, np.int64)
        day0 = datetime.datetime.combine(self.wall[0].date(), datetime.time())
        return np.array([round((w - day0).total_seconds() * 1000) for w in self.wall],
                        np.int64)


def parse_frame_name(stem: str) -> tuple[datetime.datetime, int, int] | None:
    m = FRAME_NAME.match(stem)
    if not m:
        return None
    y, mo, d, h, mi, s, ms, code, marker = (int(g) for g in m.groups())
    try:
        return datetime.datetime(y, mo, d, h, mi, s, ms * 1000), code, marker
    except ValueError:
        return None


def list_frames(folder: str | Path) -> FrameList:
    """Every ``.tif``/``.tiff`` under ``folder`` named by the convention, in capture order
    (wall clock, then name); the others are listed in ``unnamed``."""
    rows, bad = [], []
    for p in sorted(Path(folder).rglob("*")):
        if p.suffix.lower() not in (".tif", ".tiff") or not p.is_file():
            continue
        parsed = parse_frame_name(p.stem)
        if parsed is None:
            bad.append(p.name)
        else:
            rows.append((parsed[0], p, parsed[1], parsed[2]))
    rows.sort(key=lambda r: (r[0], r[1].name))
    return FrameList([r[1] for r in rows], [r[0] for r in rows],
                     np.array([r[2] for r in rows], np.int64),
                     np.array([r[3] for r in rows], np.int64), bad)


def unwrap_counter(counter: np.ndarray, wall_ms: np.ndarray, fps: float, wrap: int
                   ) -> np.ndarray:
    """Frame numbers from a counter that wraps at ``wrap``: each step is the counter
    difference plus the number of whole wraps that best agrees with the wall-clock gap."""
    if counter.size == 0:
        return counter.astype(np.int64)
    d = np.diff(counter) % wrap
    expect = np.diff(wall_ms) * fps / 1000.0
    k = np.maximum(np.round((expect - d) / wrap), 0).astype(np.int64)
    return counter[0] + np.concatenate(([0], np.cumsum(d + k * wrap)))


def detect_wrap(counter: np.ndarray, wall_ms: np.ndarray, fps: float) -> int | None:
    """The counter's modulus seen where it goes down between frames close in time
    (``prev + frames elapsed - cur``), or None when it never wraps there."""
    d = np.diff(counter)
    gap = np.diff(wall_ms) * fps / 1000.0
    j = np.flatnonzero((d < 0) & (gap < 3.5))
    if j.size == 0:
        return None
    implied = counter[j] + np.maximum(np.round(gap[j]), 1).astype(np.int64) - counter[j + 1]
    vals, counts = np.unique(implied, return_counts=True)
    return int(vals[counts.argmax()])


def load_luma(path: Path, width: int, height: int) -> np.ndarray:
    """A frame as 8-bit luma at (height, width): colour to grey, 16 bit to 8, area-scaled."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise LayoutError(f"{path.name}: not a readable image")
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8) if img.max() > 255 else img.astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.shape != (height, width):
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)


def standard_eeg_name(name: str) -> str:
    """Neuroscan upper case to 10-20 spelling (FP1 -> Fp1, CZ -> Cz, POZ -> POz); other
    names unchanged. The fusion model and features address EEG sites by 10-20 name."""
    m = re.fullmatch(r"(FP|AF|FC|FT|CP|TP|PO|CB|[FCTPOIM])(Z|\d{1,2})", name.strip().upper())
    if not m:
        return name
    head, tail = m.groups()
    head = {"FP": "Fp", "CB": "CB"}.get(head, head)
    return head + ("z" if tail == "Z" else tail)


__all__ = [
    "BIOPAC_COLUMNS",
    "EegFile",
    "FrameList",
    "LayoutError",
    "PolygraphFile",
    "detect_wrap",
    "list_frames",
    "load_luma",
    "parse_frame_name",
    "read_eeg",
    "read_polygraph",
    "standard_eeg_name",
    "unwrap_counter",
]
