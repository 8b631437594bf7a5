"""``mmme-hil bench features [--json] [--duration S] [--seed N]``: feature cost on the rig.

Builds the full rig's signals (8 EEG channels and the hub's ECG, PPG, RSP, EDA, SKT at
1000 Hz) with known truth, streams them through :class:`edge.features.FeaturePipeline` in
20-50 ms blocks and prints seconds of signal processed per second of CPU
(``time.process_time``), then NeuroKit2's offline processing of the same peripheral
input (ecg/ppg/rsp/eda_process) for comparison. The last line is
one JSON object: ``{"realtime_factor": x, "vs_neurokit2": r}``: x for the whole rig, r
NeuroKit2's CPU time over ours on the hub channels both process (r > 1: we are faster).
``--nk-eeg`` also times nk.eeg_power per 1-s epoch (very slow, so opt-in).

The ``synth_*`` builders are also the known-truth signals of tests/test_features_*.py.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from sensors.blocks import STATUS_ADS1299, STATUS_HUB, SampleBlock, StreamInfo

EEG_CHANNELS = ("Fp1", "Fp2", "F7", "F8", "C3", "C4", "O1", "O2")
EEG_UV_PER_COUNT = 4.5 / (2**23 - 1) / 24 * 1e6
T0_NS = 1_000_000_000_000  # an arbitrary host time origin


def eeg_info(fs: float = 1000.0, channels: tuple[str, ...] = EEG_CHANNELS) -> StreamInfo:
    n = len(channels)
    return StreamInfo("eeg", fs, channels, ("uV",) * n, (EEG_UV_PER_COUNT,) * n, (0.0,) * n,
                      "sample", STATUS_ADS1299)


def hub_info(fs: float = 1000.0) -> StreamInfo:
    return StreamInfo("hub", fs, ("ECG", "PPG", "RSP", "EDA", "SKT"),
                      ("mV", "au", "au", "uS", "degC"), (1e-4, 1e-4, 1e-4, 1e-5, 1e-4),
                      (0.0,) * 5, "us", STATUS_HUB)


# --- known-truth signals ---------------------------------------------------------------------
def beat_times(duration_s: float, hr_bpm: float, seed: int, sd: float = 0.03,
               start_s: float = 0.3) -> np.ndarray:
    """Beat times with random RR variation (sd as a fraction of the mean interval)."""
    rng = np.random.default_rng(seed)
    rr = 60.0 / hr_bpm * (1 + sd * rng.standard_normal(int(duration_s * hr_bpm / 40) + 4))
    t = start_s + np.concatenate(([0.0], np.cumsum(rr)))
    return t[t < duration_s - 0.5]


def _sum_events(t: np.ndarray, ev: np.ndarray, shape: Callable[[np.ndarray], np.ndarray]
                ) -> np.ndarray:
    """Sum of shape(t - e) over the two events around each sample (previous and next)."""
    i = np.clip(np.searchsorted(ev, t), 1, ev.size - 1)
    return shape(t - ev[i - 1]) + shape(t - ev[i])


def synth_ecg(duration_s: float, fs: float, hr_bpm: float = 70.0, seed: int = 0,
              noise: float = 0.02, wander: float = 0.15, r: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """PQRST sum of Gaussians (mV) at known R times (``r``, or drawn around ``hr_bpm``);
    returns (signal, r_times_s)."""
    r = beat_times(duration_s, hr_bpm, seed) if r is None else np.asarray(r, float)
    t = np.arange(int(duration_s * fs)) / fs
    comps = ((0.12, -0.2, 0.025), (-0.12, -0.03, 0.01), (1.0, 0.0, 0.011),
             (-0.25, 0.03, 0.011), (0.3, 0.25, 0.045))

    def shape(tau: np.ndarray) -> np.ndarray:
        return sum(a * np.exp(-0.5 * ((tau - m) / s) ** 2) for a, m, s in comps)

    rng = np.random.default_rng(seed + 1)
    x = _sum_events(t, r, shape) + wander * np.sin(2 * np.pi * 0.25 * t)
    return x + noise * rng.standard_normal(t.size), r


def synth_ppg(duration_s: float, fs: float, hr_bpm: float = 70.0, seed: int = 0,
              noise: float = 0.01, r: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Systolic wave (fast rise, slow fall) plus dicrotic wave 0.2 s after each beat
    (``r``, or drawn around ``hr_bpm``); returns (signal, peak_times_s, amplitudes)."""
    p = (beat_times(duration_s, hr_bpm, seed) if r is None else np.asarray(r, float)) + 0.2
    rng = np.random.default_rng(seed + 2)
    amp = 1.0 + 0.1 * rng.standard_normal(p.size)
    t = np.arange(int(duration_s * fs)) / fs
    i = np.clip(np.searchsorted(p, t), 1, p.size - 1)

    def wave(k: np.ndarray) -> np.ndarray:
        x = t - p[k]
        sd = np.where(x < 0, 0.06, 0.12)
        return amp[k] * (np.exp(-0.5 * (x / sd) ** 2)
                         + 0.3 * np.exp(-0.5 * ((x - 0.32) / 0.07) ** 2))

    x = wave(i - 1) + wave(i) + 0.1 * np.sin(2 * np.pi * 0.25 * t)
    return x + noise * rng.standard_normal(t.size), p, amp


def synth_rsp(duration_s: float, fs: float, rate_bpm: float = 15.0, seed: int = 0,
              pauses: dict[int, float] | None = None, noise: float = 0.005
              ) -> tuple[np.ndarray, np.ndarray]:
    """Belt signal 0..1: raised-cosine inspiration (40%), optional hold at full (breath k
    -> pause s), cosine expiration. Returns (signal, onset_times_s)."""
    rng = np.random.default_rng(seed)
    n_b = int(duration_s * rate_bpm / 40) + 4
    period = 60.0 / rate_bpm * (1 + 0.05 * rng.standard_normal(n_b))
    hold = np.zeros(n_b)
    for k, v in (pauses or {}).items():
        hold[k] = v
    on = 0.5 + np.concatenate(([0.0], np.cumsum(period + hold)))
    t = np.arange(int(duration_s * fs)) / fs
    k = np.clip(np.searchsorted(on, t, side="right") - 1, 0, n_b - 1)
    tau = t - on[k]
    ti, te = 0.4 * period[k], 0.6 * period[k]
    y = np.where(tau < ti, 0.5 - 0.5 * np.cos(np.pi * tau / ti),
                 np.where(tau < ti + hold[k], 1.0,
                          0.5 + 0.5 * np.cos(np.pi * np.clip((tau - ti - hold[k]) / te, 0, 1))))
    y = np.where(t < on[0], 0.0, y)
    return y + noise * rng.standard_normal(t.size), on[on < duration_s]


def bateman_unit(tau: np.ndarray, rise: float = 0.75, decay: float = 2.0) -> np.ndarray:
    """SCR shape with unit peak, zero before onset."""
    tp = np.log(decay / rise) * rise * decay / (decay - rise)
    peak = np.exp(-tp / decay) - np.exp(-tp / rise)
    x = np.maximum(tau, 0.0)
    return (np.exp(-x / decay) - np.exp(-x / rise)) / peak


def synth_eda(duration_s: float, fs: float, onsets_s: np.ndarray, amps_us: np.ndarray,
              seed: int = 0, noise: float = 0.003) -> np.ndarray:
    """Tonic 5 uS with a slow drift plus Bateman SCRs at known onsets (uS)."""
    t = np.arange(int(duration_s * fs)) / fs
    x = 5.0 + 0.2 * np.sin(2 * np.pi * t / 240.0)
    x = x + bateman_unit(t[:, None] - np.asarray(onsets_s)[None, :]) @ np.asarray(amps_us)
    return x + noise * np.random.default_rng(seed).standard_normal(t.size)


def synth_eeg(duration_s: float, fs: float, n_ch: int = 8, seed: int = 0,
              alpha_uv: float = 10.0, mains_uv: float = 20.0, mains_hz: float = 50.0,
              blinks_s: tuple[float, ...] = ()) -> np.ndarray:
    """(n, n_ch) uV: 1/f-ish background + a 10-Hz alpha sine + mains, and blinks (a
    150-uV bump, 0.2 s) on the first two (frontal) channels."""
    from scipy import signal

    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * fs)) / fs
    b, a = signal.butter(1, 2.0, fs=fs)
    bg = signal.lfilter(b, a, rng.standard_normal((t.size, n_ch)), axis=0) * 20.0
    bg += 2.0 * rng.standard_normal((t.size, n_ch))
    x = bg + alpha_uv * np.sin(2 * np.pi * 10.0 * t)[:, None] + \
        mains_uv * np.sin(2 * np.pi * mains_hz * t)[:, None]
    for tb in blinks_s:
        x[:, :2] += (150.0 * np.exp(-0.5 * ((t - tb) / 0.05) ** 2))[:, None]
    return x


def make_blocks(info: StreamInfo, values: np.ndarray, sizes: list[int] | int,
                t0_ns: int = T0_NS, status: np.ndarray | None = None) -> list[SampleBlock]:
    """Cut (n, c) values into SampleBlocks of the given sizes (cycled), host times on the
    nominal grid, raw counts from the stream's scale."""
    values = np.asarray(values, float).reshape(values.shape[0], len(info.channels))
    n = values.shape[0]
    sizes = [sizes] if isinstance(sizes, int) else sizes
    scale, off = np.asarray(info.scale), np.asarray(info.offset)
    with np.errstate(invalid="ignore"):
        raw = np.nan_to_num(np.round((values - off) / scale)).clip(-2**31, 2**31 - 1)
    idx = np.arange(n, dtype=np.int64)
    t = t0_ns + np.round(idx * 1e9 / info.fs_hz).astype(np.int64)
    st = np.zeros(n, np.uint32) if status is None else np.asarray(status, np.uint32)
    out, a, i = [], 0, 0
    while a < n:
        b = min(a + sizes[i % len(sizes)], n)
        out.append(SampleBlock(info.name, idx[a:b], idx[a:b], t[a:b], raw[a:b].astype(np.int32),
                               values[a:b], np.zeros(b - a, np.uint8), st[a:b]))
        a, i = b, i + 1
    return out


def feed(step: object, x: np.ndarray, fs: float, sizes: list[int] | int,
         bad: np.ndarray | None = None, t0_ns: int = T0_NS) -> list:
    """Stream one channel through a feature step (``update(t_ns, x, bad)``) in blocks."""
    sizes = [sizes] if isinstance(sizes, int) else sizes
    n = x.shape[0]
    t = t0_ns + np.round(np.arange(n) * 1e9 / fs).astype(np.int64)
    bad = np.zeros(x.shape, np.uint8) if bad is None else bad
    out, a, i = [], 0, 0
    while a < n:
        b = min(a + sizes[i % len(sizes)], n)
        out += step.update(t[a:b], x[a:b], bad[a:b])  # type: ignore[attr-defined]
        a, i = b, i + 1
    return out


def beats_from_rate(duration_s: float, hr_bpm: np.ndarray, fs: float) -> np.ndarray:
    """Beat times where the integral of a sampled heart rate crosses an integer."""
    phase = np.cumsum(hr_bpm / 60.0 / fs)
    k = np.flatnonzero(np.diff(np.floor(phase)) > 0) + 1
    return k / fs


# --- the bench ------------------------------------------------------------------------------------
def rig_signals(duration_s: float, seed: int, fs: float = 1000.0
                ) -> tuple[np.ndarray, np.ndarray]:
    ecg, _ = synth_ecg(duration_s, fs, 68.0, seed)
    ppg, _, _ = synth_ppg(duration_s, fs, 68.0, seed)
    rsp, _ = synth_rsp(duration_s, fs, 14.0, seed)
    on = np.arange(5.0, duration_s - 5.0, 12.0)
    eda = synth_eda(duration_s, fs, on, np.full(on.size, 0.3), seed)
    t = np.arange(ecg.size) / fs
    skt = 33.5 - 0.002 * t + 0.002 * np.random.default_rng(seed).standard_normal(t.size)
    hub = np.column_stack((ecg, ppg, rsp, eda, skt))
    eeg = synth_eeg(duration_s, fs, 8, seed, blinks_s=tuple(np.arange(3.0, duration_s, 7.0)))
    return eeg, hub


def run_ours(eeg: np.ndarray, hub: np.ndarray, fs: float, seed: int
             ) -> tuple[float, float, int]:
    """CPU seconds for the EEG and hub streams through the pipeline, and features made."""
    from edge.features import FeaturePipeline

    rng = np.random.default_rng(seed)
    sizes = [int(s) for s in rng.integers(int(0.02 * fs), int(0.05 * fs) + 1, 64)]
    ei, hi = eeg_info(fs), hub_info(fs)
    eb, hb = make_blocks(ei, eeg, sizes), make_blocks(hi, hub, sizes)
    pipe = FeaturePipeline(ei, hi)
    cpu_eeg = cpu_hub = 0.0
    n_feat = 0
    for e, h in zip(eb, hb, strict=True):
        c0 = time.process_time()
        n_feat += len(pipe.update(e))
        c1 = time.process_time()
        n_feat += len(pipe.update(h))
        c2 = time.process_time()
        cpu_eeg += c1 - c0
        cpu_hub += c2 - c1
    return cpu_eeg, cpu_hub, n_feat


def run_neurokit(eeg: np.ndarray, hub: np.ndarray, fs: float, with_eeg: bool = False
                 ) -> tuple[float, float]:
    """CPU seconds for NeuroKit2's offline processing of the same EEG and hub signals."""
    import warnings

    import neurokit2 as nk

    c0 = c1 = time.process_time()
    if with_eeg:  # nk.eeg_power is slow (~1-2 CPU s per 1-s epoch here): opt-in
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            step = int(fs)
            for a in range(0, eeg.shape[0] - step + 1, step):
                nk.eeg_power(eeg[a:a + step], sampling_rate=int(fs))
        c1 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nk.ecg_process(hub[:, 0], sampling_rate=int(fs))
        nk.ppg_process(hub[:, 1], sampling_rate=int(fs))
        nk.rsp_process(hub[:, 2], sampling_rate=int(fs))
        nk.eda_process(hub[:, 3], sampling_rate=int(fs))
    c2 = time.process_time()
    return c1 - c0, c2 - c1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmme-hil bench features")
    ap.add_argument("--json", action="store_true", help="end with one JSON line (always)")
    ap.add_argument("--duration", type=float, default=90.0, help="seconds of signal")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-neurokit", action="store_true", help="skip the NeuroKit2 reference")
    ap.add_argument("--nk-eeg", action="store_true",
                    help="also time nk.eeg_power per 1-s epoch (slow)")
    args = ap.parse_args(argv)
    fs = 1000.0
    eeg, hub = rig_signals(args.duration, args.seed, fs)
    cpu_eeg, cpu_hub, n_feat = run_ours(eeg, hub, fs, args.seed)
    ours = cpu_eeg + cpu_hub
    rt = args.duration / ours if ours > 0 else float("inf")
    print(f"signal: {args.duration:.0f} s, 8 EEG + 5 hub channels at {fs:.0f} Hz, "
          f"20-50 ms blocks, {n_feat} features")
    print(f"ours: {ours:.3f} CPU s (EEG {cpu_eeg:.3f}, hub {cpu_hub:.3f}): "
          f"{rt:.0f}x real time, {100.0 / rt:.2f}% of one core")
    result: dict[str, float | None] = {"realtime_factor": round(rt, 1), "vs_neurokit2": None}
    if not args.no_neurokit:
        try:
            nk_eeg, nk_hub = run_neurokit(eeg, hub, fs, args.nk_eeg)
        except ImportError:
            print("neurokit2 not installed: no reference")
        else:
            # Like for like: the hub channels, which both process (NeuroKit2 offline,
            # one call per signal; ours streamed in blocks).
            print(f"neurokit2 offline ecg/ppg/rsp/eda_process: {nk_hub:.3f} CPU s "
                  f"({args.duration / nk_hub:.0f}x real time); ours on the same hub channels: "
                  f"{cpu_hub:.3f} CPU s ({args.duration / cpu_hub:.0f}x real time)")
            if args.nk_eeg:
                print(f"neurokit2 eeg_power per 1-s epoch: {nk_eeg:.3f} CPU s; ours EEG: "
                      f"{cpu_eeg:.3f} CPU s")
            result["vs_neurokit2"] = round(nk_hub / cpu_hub, 2) if cpu_hub > 0 else None
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
