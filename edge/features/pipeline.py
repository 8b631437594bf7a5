"""FeaturePipeline: SampleBlocks from the "eeg" and "hub" streams in, Features out.

    pipe = FeaturePipeline(eeg_info, hub_info, FeatureConfig(mains_hz=50))
    for block in blocks:                 # any stream, any block size, in time order
        feats = pipe.update(block)       # list[Feature] decided by this block
    pipe.summary()                       # ~1 Hz vitals: dict name -> Feature
    pipe.event_window(t_ns)              # features around an event, for the fusion model

Channels are found by name in the StreamInfo ("ecg", "ppg", "rsp", "eda", "skt" on the
hub, any case; any names on the EEG), never by index. Per-sample quality bits (NaN, saturation,
flat line, lead-off, counter gap) are computed once per stream and follow each sample
through decimation into every feature: bad input yields invalid features with a reason.
Slow channels are decimated by boxcar averaging first (PPG 200 Hz, RSP/EDA 25 Hz,
SKT 10 Hz), which is also what keeps the rig's cost at a small fraction of a core.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sensors.blocks import SampleBlock, StreamInfo
from sensors.status import channel_faults

from .base import OK, PENDING, Boxcar, Feature, Quality, reason_of, union_bits
from .ecg import EcgFeatures
from .eda import EdaFeatures
from .eeg import BANDS, EegFeatures
from .ppg import PpgFeatures
from .rsp import RspFeatures
from .skt import SktFeatures

INF = float("inf")
# Physical plausibility limits (outside: "saturated") and flat-line durations per channel.
DEFAULT_LIMITS: dict[str, tuple[float, float]] = {
    "eeg": (-187_000.0, 187_000.0),  # uV: ADS1299 rails at gain 24 are +-187.5 mV
    "ecg": (-10.0, 10.0),  # mV
    "ppg": (-INF, INF),
    "rsp": (-INF, INF),
    "eda": (0.0, 100.0),  # uS: conductance is never negative
    "skt": (15.0, 45.0),  # degC on skin
}
DEFAULT_FLAT_S: dict[str, float] = {
    "eeg": 0.5, "ecg": 1.0, "ppg": 1.0, "rsp": 5.0, "eda": 10.0, "skt": 60.0,
}
# Clipping: this long at the channel's extreme without the value changing (Quality).
DEFAULT_CLIP_S: dict[str, float] = {"ecg": 0.05, "ppg": 0.1, "rsp": 0.2}
DECIMATE_TO_HZ: dict[str, float] = {"ppg": 200.0, "rsp": 25.0, "eda": 25.0, "skt": 10.0}
HUB_CHANNELS = ("ecg", "ppg", "rsp", "eda", "skt")


Step = EcgFeatures | PpgFeatures | RspFeatures | EdaFeatures | SktFeatures


@dataclass(frozen=True)
class FeatureConfig:
    mains_hz: float = 50.0  # 50 or 60
    ppg_inverted: bool = False  # the PPG sensor's output falls as blood volume rises
    eeg_frontal: tuple[str, ...] | None = None  # default: Fp*, AF*, F7/F8/F3/F4/Fz
    eeg_channels: tuple[str, ...] | None = None  # EEG band features on these only (None: all)
    eeg_adc_bits: int | None = 24  # raw at the rail of this two's complement width: saturated
    hub_adc_bits: int | None = None
    limits: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    flat_s: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FLAT_S))
    clip_s: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CLIP_S))
    hrv_window_s: float = 30.0
    scr_window_s: tuple[float, float] = (1.0, 5.0)
    scr_amp_min_us: float = 0.02
    event_hr_base_s: float = 3.0  # HR baseline before the event
    # HR, breathing and temperature response window: short enough that its features (R-peak
    # and breath detection add ~0.5 and ~1.5 s) are ready when the SCR window (1-5 s) closes.
    event_after_s: float = 3.5
    eeg_epoch_s: float = 1.0  # EEG epoch centred on the event (apex)
    stale_s: float = 3.0  # summary values older than this (signal time) are invalid
    slow_chunk_s: float = 0.2  # PPG/RSP/EDA/SKT run on chunks this long (adds <= 0.2 s)


@dataclass(frozen=True)
class EventWindow:
    """Features around one event in a fixed layout (``names``) for the fusion model."""

    t_ns: int
    features: dict[str, Feature]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.features)

    @property
    def ready(self) -> bool:
        """False while any window this event needs has not closed yet."""
        return not any(f.reason == PENDING for f in self.features.values())

    def vector(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, valid): float64 values in ``names`` order, NaN where invalid."""
        v = np.array([f.value for f in self.features.values()], float)
        ok = np.array([f.valid for f in self.features.values()], bool)
        return np.where(ok, v, np.nan), ok


def _rail_mask(raw: np.ndarray, bits: int | None) -> np.ndarray | None:
    if bits is None:
        return None
    hi, lo = (1 << (bits - 1)) - 1, -(1 << (bits - 1))
    return (raw >= hi) | (raw <= lo)


class FeaturePipeline:
    """One stateful step per modality behind a single ``update(block)``."""

    def __init__(self, eeg: StreamInfo | None = None, hub: StreamInfo | None = None,
                 config: FeatureConfig | None = None) -> None:
        self.cfg = cfg = config or FeatureConfig()
        self.infos = {i.name: i for i in (eeg, hub) if i is not None}
        self._quality: dict[str, Quality] = {}
        self.eeg: EegFeatures | None = None
        self.hub: dict[str, tuple[int, Boxcar | None, Step]] = {}
        self.latest: dict[str, Feature] = {}
        self._latest_ns = 0
        self._eeg_stream = eeg.name if eeg is not None else None
        self._eeg_cols: np.ndarray | None = None
        if eeg is not None:
            picked = eeg.channels
            if cfg.eeg_channels:
                missing = [c for c in cfg.eeg_channels if c not in eeg.channels]
                if missing:
                    raise ValueError(f"eeg_channels: {missing} not among the EEG's channels")
                picked = tuple(cfg.eeg_channels)
                self._eeg_cols = np.array([eeg.channels.index(c) for c in picked])
            frontal = cfg.eeg_frontal
            if frontal is not None:
                frontal = tuple(c for c in frontal if c in picked)
            self.eeg = EegFeatures(eeg.fs_hz, picked, cfg.mains_hz, frontal)
            self._quality[eeg.name] = self._make_quality(eeg, ["eeg"] * len(eeg.channels))
        if hub is not None:
            # Names as the hub declares them, matched case-insensitively ("ECG" or "ecg").
            lower = [ch.lower() for ch in hub.channels]
            kinds = [ch if ch in HUB_CHANNELS else "" for ch in lower]
            self._quality[hub.name] = self._make_quality(hub, kinds)
            for ch in HUB_CHANNELS:
                if ch not in lower:
                    continue
                j = lower.index(ch)
                k = max(round(hub.fs_hz / DECIMATE_TO_HZ[ch]), 1) if ch in DECIMATE_TO_HZ \
                    else 1
                fs = hub.fs_hz / k
                dec = Boxcar(k, 1) if k > 1 else None
                self.hub[ch] = (j, dec, _make_step(ch, fs, hub.units[j], cfg))

        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_n = 0
        self._chunk_n = int(cfg.slow_chunk_s * hub.fs_hz) if hub is not None else 0

    def _make_quality(self, info: StreamInfo, kinds: list[str]) -> Quality:
        lim = [self.cfg.limits.get(k, (-INF, INF)) for k in kinds]
        flat = [max(int(self.cfg.flat_s.get(k, 1e9) * info.fs_hz), 1) for k in kinds]
        clip = [max(int(self.cfg.clip_s[k] * info.fs_hz), 2) if k in self.cfg.clip_s else 0
                for k in kinds]
        return Quality(len(kinds), np.array([a for a, _ in lim]), np.array([b for _, b in lim]),
                       np.array(flat), np.zeros(len(kinds)), np.array(clip))

    # --- streaming ----------------------------------------------------------------------------
    def update(self, block: SampleBlock, lead_off: np.ndarray | None = None) -> list[Feature]:
        """Consume one block. ``lead_off`` (n,) or (n, channels) bool overrides what the
        stream's status word says of each channel (``sensors.status.channel_faults``: EEG
        lead-off, the hub's ECG lead-off, EDA open, SKT fault). Unknown streams are ignored."""
        info = self.infos.get(block.stream)
        if info is None or len(block) == 0:
            return []
        x = np.asarray(block.values, float).reshape(len(block), -1)
        t = np.asarray(block.host_t_ns, np.int64)
        is_eeg = block.stream == self._eeg_stream
        if lead_off is None:  # what the device's status word says of each channel
            lead_off = channel_faults(info, block.status)
        bits = self.cfg.eeg_adc_bits if is_eeg else self.cfg.hub_adc_bits
        sat = _rail_mask(np.asarray(block.raw), bits) if block.raw.size else None
        bad = self._quality[block.stream].update(block.index, x, lead_off, sat)
        self._latest_ns = max(self._latest_ns, int(t[-1]))
        out: list[Feature] = []
        if is_eeg:
            assert self.eeg is not None
            if self._eeg_cols is not None:  # band features on the configured channels only
                x, bad = x[:, self._eeg_cols], bad[:, self._eeg_cols]
            out = self.eeg.update(t, x, bad)
        else:
            out = self._hub_update(t, x, bad)
        for f in out:
            self.latest[f.name] = f
        return out

    def _hub_update(self, t: np.ndarray, x: np.ndarray, bad: np.ndarray) -> list[Feature]:
        out: list[Feature] = []
        # Full-rate channels (ECG) run on every block: their latency matters most.
        for j, dec, step in self.hub.values():
            if dec is None:
                out += step.update(t, x[:, j], bad[:, j])  # type: ignore[attr-defined]
        # Decimated channels run on chunks of >= slow_chunk_s: a few filter calls per
        # chunk instead of per block is most of the CPU saved; values do not change.
        self._pending.append((t, x, bad))
        self._pending_n += t.size
        if self._pending_n < self._chunk_n:
            return out
        tc = np.concatenate([p[0] for p in self._pending])
        xc = np.concatenate([p[1] for p in self._pending])
        bc = np.concatenate([p[2] for p in self._pending])
        self._pending, self._pending_n = [], 0
        for j, dec, step in self.hub.values():
            if dec is not None:
                tt, xx, bb = dec.update(tc, xc[:, j:j + 1], bc[:, j:j + 1])
                out += step.update(tt, xx[:, 0], bb[:, 0])  # type: ignore[attr-defined]
        return out

    # --- views ------------------------------------------------------------------------------
    def _get(self, name: str, unit: str = "") -> Feature:
        f = self.latest.get(name)
        if f is None:
            return Feature(name, float("nan"), unit, self._latest_ns, 0.0, False, "no_data")
        if f.valid and self._latest_ns - f.t_ns > self.cfg.stale_s * 1e9:
            return Feature(name, float("nan"), f.unit, f.t_ns, f.latency_ms, False, "stale")
        return f

    def summary(self) -> dict[str, Feature]:
        """Latest vitals: hr_bpm (ECG, else PPG), rr_bpm, eda_us, skt_c, and per EEG band the
        mean power over valid channels of the last 1-s window (eeg_{band}_pow, uV^2)."""
        hr = self._get("ecg_hr_bpm", "bpm")
        if not hr.valid and self._get("ppg_hr_bpm").valid:
            hr = self._get("ppg_hr_bpm")
        out = {
            "hr_bpm": _rename(hr, "hr_bpm"),
            "rr_bpm": _rename(self._get("rsp_rate_bpm", "1/min"), "rr_bpm"),
            "eda_us": self._get("eda_us", "uS"),
            "skt_c": self._get("skt_c", "degC"),
        }
        if self.eeg is not None:
            for b in BANDS:
                fs = [self._get(f"eeg_{ch}_{b}_pow") for ch in self.eeg.channels]
                ok = [f for f in fs if f.valid]
                t = max((f.t_ns for f in fs), default=self._latest_ns)
                reason = OK if ok else (next((f.reason for f in fs if f.reason), "no_data"))
                val = float(np.mean([f.value for f in ok])) if ok else np.nan
                out[f"eeg_{b}_pow"] = Feature.make(f"eeg_{b}_pow", val, "uV^2", t,
                                                   self._latest_ns, reason)
            out["eeg_blink"] = self._get("eeg_blink", "flag")
        return out

    def event_names(self) -> tuple[str, ...]:
        """The fixed layout of ``event_window(...).features`` for this rig."""
        names = ["hr_base_bpm", "hr_delta_bpm", "hr_min_delta_bpm",
                 "eda_scr_latency_s", "eda_scr_amp_us", "eda_scr_rise_s",
                 "rsp_rate_bpm", "rsp_amp", "rsp_insp_pause_max_s", "skt_c", "skt_delta_c"]
        if self.eeg is not None:
            names += [n for n, _ in self.eeg.names_units()]
        return tuple(names)

    def event_window(self, t_ns: int) -> EventWindow:
        """Physiological features around an event at ``t_ns`` (a marker or an expression
        apex). Invalid with reason "pending" until their windows have closed (about
        ``event_after_s`` + 2 s after the event); call it within ~20 s of that."""
        c = self.cfg
        feats: dict[str, Feature] = {}
        feats.update(self._event_hr(t_ns))
        eda = self.hub.get("eda")
        scr = eda[2].scr_after(t_ns, c.scr_window_s) if eda else {}  # type: ignore[attr-defined]
        for n, u in (("eda_scr_latency_s", "s"), ("eda_scr_amp_us", "uS"),
                     ("eda_scr_rise_s", "s")):
            feats[n] = scr.get(n, self._missing(n, u, t_ns))
        feats.update(self._event_rsp(t_ns))
        feats.update(self._event_skt(t_ns))
        if self.eeg is not None:
            half = int(c.eeg_epoch_s / 2 * 1e9)
            for f in self.eeg.epoch(t_ns - half, t_ns + half):
                feats[f.name] = f
        return EventWindow(t_ns, {n: feats[n] for n in self.event_names()})

    def _missing(self, name: str, unit: str, t_ns: int) -> Feature:
        return Feature(name, float("nan"), unit, t_ns, 0.0, False, "no_channel")

    def _stream_time(self, ch: str) -> int:
        step = self.hub[ch][2]
        return int(step.latest_ns)  # type: ignore[attr-defined]

    def _event_hr(self, t: int) -> dict[str, Feature]:
        names = (("hr_base_bpm", "bpm"), ("hr_delta_bpm", "bpm"), ("hr_min_delta_bpm", "bpm"))
        ch = "ecg" if "ecg" in self.hub else ("ppg" if "ppg" in self.hub else None)
        if ch is None:
            return {n: self._missing(n, u, t) for n, u in names}
        step = self.hub[ch][2]
        after = int(self.cfg.event_after_s * 1e9)
        now = self._stream_time(ch)
        if now - step.LATENCY_MS * 1e6 < t + after:  # type: ignore[attr-defined]
            return {n: Feature.make(n, np.nan, u, t, now, PENDING) for n, u in names}
        beats = step.beats  # type: ignore[attr-defined]
        # Intervals from windows that failed their quality rules stay out (ECG).
        _, rb = beats.trusted(t - int(self.cfg.event_hr_base_s * 1e9), t)
        _, ra = beats.trusted(t, t + after)
        hb, ha = 60.0 / rb[np.isfinite(rb)], 60.0 / ra[np.isfinite(ra)]
        reason = OK if hb.size >= 1 and ha.size >= 2 else "no_beats"
        base = float(hb.mean()) if hb.size else np.nan
        return {
            "hr_base_bpm": Feature.make("hr_base_bpm", base, "bpm", t, now, reason),
            "hr_delta_bpm": Feature.make("hr_delta_bpm", float(ha.mean()) - base if ha.size
                                         else np.nan, "bpm", t, now, reason),
            "hr_min_delta_bpm": Feature.make("hr_min_delta_bpm", float(ha.min()) - base
                                             if ha.size else np.nan, "bpm", t, now, reason),
        }

    def _event_rsp(self, t: int) -> dict[str, Feature]:
        names = (("rsp_rate_bpm", "1/min"), ("rsp_amp", "au"), ("rsp_insp_pause_max_s", "s"))
        if "rsp" not in self.hub:
            return {n: self._missing(n, u, t) for n, u in names}
        step: RspFeatures = self.hub["rsp"][2]  # type: ignore[assignment]
        after = int(self.cfg.event_after_s * 1e9)
        now = step.latest_ns
        if now - step.LATENCY_MS * 1e6 < t + after:
            return {n: Feature.make(n, np.nan, u, t, now, PENDING) for n, u in names}
        br = [b for b in step.breaths if t - after <= b[0] < t + after]
        rates = np.array([b[1] for b in br], float)
        rates = rates[np.isfinite(rates)]
        reason = OK if rates.size else "no_breaths"
        return {
            "rsp_rate_bpm": Feature.make("rsp_rate_bpm", float(rates.mean()) if rates.size
                                         else np.nan, "1/min", t, now, reason),
            "rsp_amp": Feature.make("rsp_amp", float(np.mean([b[2] for b in br])) if br
                                    else np.nan, step.unit, t, now, reason),
            "rsp_insp_pause_max_s": Feature.make("rsp_insp_pause_max_s",
                                                 max((b[4] for b in br), default=np.nan), "s",
                                                 t, now, reason),
        }

    def _event_skt(self, t: int) -> dict[str, Feature]:
        if "skt" not in self.hub:
            return {n: self._missing(n, "degC", t) for n in ("skt_c", "skt_delta_c")}
        step: SktFeatures = self.hub["skt"][2]  # type: ignore[assignment]
        after = int(self.cfg.event_after_s * 1e9)
        now = step.latest_ns
        if now < t + after:
            return {n: Feature.make(n, np.nan, "degC", t, now, PENDING)
                    for n in ("skt_c", "skt_delta_c")}
        _, x0, b0 = step.ring.between(t - 1_000_000_000, t)
        _, x1, b1 = step.ring.between(t + after - 1_000_000_000, t + after)
        reason = reason_of(union_bits(b0) | union_bits(b1))
        if not (x0.size and x1.size):
            reason = "no_data"
        lvl = float(x0.mean()) if x0.size else np.nan
        return {
            "skt_c": Feature.make("skt_c", lvl, "degC", t, now, reason),
            "skt_delta_c": Feature.make("skt_delta_c", float(x1.mean()) - lvl if x1.size
                                        else np.nan, "degC", t, now, reason),
        }


def _make_step(kind: str, fs: float, unit: str, cfg: FeatureConfig) -> Step:
    if kind == "ecg":
        return EcgFeatures(fs, unit, cfg.hrv_window_s)
    if kind == "ppg":
        return PpgFeatures(fs, unit, inverted=cfg.ppg_inverted)
    if kind == "rsp":
        return RspFeatures(fs, unit)
    if kind == "eda":
        return EdaFeatures(fs, cfg.scr_amp_min_us)
    return SktFeatures(fs)


def _rename(f: Feature, name: str) -> Feature:
    return Feature(name, f.value, f.unit, f.t_ns, f.latency_ms, f.valid, f.reason)
