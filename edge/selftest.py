"""``mmme-edge selftest``: check every configured device, pass or fail each.

- eeg: the chip answers with the right ID (else it fails to open), and with every input
  on the internal test signal each channel shows the datasheet's square wave
  (+-1.875 mV at fCLK/2^21, about 0.98 Hz).
- hub: it identifies itself and streams at its configured rate.
- camera: frames arrive at the configured rate.
- trigger: the sync pulses the host emits come back in the EEG status bits and the
  hub's trigger bits (the loopback through the rig's trigger wiring).
- host: in direct mode (``eeg.backend = "spi"``, or ``sim`` with ``sim.eeg_link = "spi"``;
  not behind the EEG bridge, whose FIFO takes the deadline), the host's
  wake floor at the configured rate (:mod:`edge.wakeup`, the ``bench wakeup`` rule: 5 s
  on the idle host, then 2 s beside the selftest's own running rig) and whether direct
  mode can hold that rate here. A host that cannot is a WARN, not a FAIL:
  the devices work, the host loses samples. The verdict is cached for ``mmme-edge run``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edge import wakeup
from edge.config import RigConfig, eeg_link
from sensors.blocks import Frame, Marker, SampleBlock
from sensors.errors import DeviceError

ACQUIRE_S = 2.6  # long enough for two sync pulses at 1 Hz
TEST_SIGNAL_PP_UV = 2 * 4.5e6 / 2.4 / 1000.0  # 2 x VREF/2.4 mV, in uV
RATE_TOLERANCE = 0.03
WAKE_CHECK_S = 5.0  # idle: long enough to see a floor of 0.01 % at 1 kHz now and then
BESIDE_RIG_S = 2.0  # beside the selftest's own acquisition (ACQUIRE_S)


@dataclass
class Check:
    device: str
    ok: bool
    detail: str
    warn: bool = False  # works, but with a caveat the operator must read


@dataclass
class _Collect:
    blocks: dict[str, list[SampleBlock]] = field(default_factory=dict)
    frames: int = 0
    frame_t_ns: list[int] = field(default_factory=list)

    def on_block(self, block: SampleBlock) -> None:
        self.blocks.setdefault(block.stream, []).append(block)

    def on_frame(self, frame: Frame) -> None:
        self.frames += 1
        self.frame_t_ns.append(frame.t_ns)

    def on_marker(self, marker: Marker) -> None:
        pass


def _concat(blocks: list[SampleBlock], attr: str) -> np.ndarray:
    return np.concatenate([getattr(b, attr) for b in blocks]) if blocks else np.zeros(0)


def _rate(index: np.ndarray, host_t_ns: np.ndarray) -> float:
    if index.size < 2 or host_t_ns[-1] <= host_t_ns[0]:
        return 0.0
    return float((index[-1] - index[0]) / ((host_t_ns[-1] - host_t_ns[0]) / 1e9))


def check_eeg(blocks: list[SampleBlock], fs_hz: float) -> Check:
    values = _concat(blocks, "values")
    if values.size == 0:
        return Check("eeg", False, "no samples arrived")
    rate = _rate(_concat(blocks, "index"), _concat(blocks, "host_t_ns"))
    pp = np.percentile(values, 98, axis=0) - np.percentile(values, 2, axis=0)
    bad = [i for i, v in enumerate(pp) if abs(v - TEST_SIGNAL_PP_UV) > 0.1 * TEST_SIGNAL_PP_UV]
    if abs(rate - fs_hz) > RATE_TOLERANCE * fs_hz:
        return Check("eeg", False, f"rate {rate:.1f} Hz, expected {fs_hz:g}")
    if bad:
        return Check("eeg", False, f"test signal wrong on channel(s) {bad}: p-p "
                     f"{[round(float(pp[i])) for i in bad]} uV, expected "
                     f"{TEST_SIGNAL_PP_UV:.0f}")
    return Check("eeg", True, f"ID ok, {rate:.1f} Hz, test signal {np.median(pp):.0f} uV p-p "
                 f"on {len(pp)} channels")


def check_hub(blocks: list[SampleBlock], fs_hz: float) -> Check:
    index = _concat(blocks, "index")
    if index.size == 0:
        return Check("hub", False, "no samples arrived")
    rate = _rate(index, _concat(blocks, "host_t_ns"))
    if abs(rate - fs_hz) > RATE_TOLERANCE * fs_hz:
        return Check("hub", False, f"rate {rate:.1f} Hz, expected {fs_hz:g}")
    return Check("hub", True, f"identified, {rate:.1f} Hz")


def check_camera(t_ns: list[int], fps: float) -> Check:
    if len(t_ns) < 2:
        return Check("camera", False, "no frames arrived")
    rate = (len(t_ns) - 1) / ((t_ns[-1] - t_ns[0]) / 1e9)
    if abs(rate - fps) > 0.05 * fps:
        return Check("camera", False, f"{rate:.1f} fps, expected {fps:g}")
    return Check("camera", True, f"{rate:.1f} fps")


def check_trigger(blocks: dict[str, list[SampleBlock]]) -> Check:
    seen = {}
    for name, bl in blocks.items():
        bit = _concat(bl, "trigger").astype(np.int64) & 1
        seen[name] = int(np.count_nonzero(np.diff(bit) == 1)) if bit.size else 0
    if not seen:
        return Check("trigger", False, "no stream to see the sync pulses")
    missing = [n for n, k in seen.items() if k == 0]
    if missing:
        return Check("trigger", False, f"no sync pulse seen by {', '.join(missing)}")
    return Check("trigger", True, "sync pulses seen by " +
                 ", ".join(f"{n} ({k})" for n, k in seen.items()))


def direct_mode(cfg: RigConfig) -> bool:
    """The ADS1299 read by the host at every DRDY (spi, or its emulation), not the bridge."""
    return bool(cfg.eeg["enabled"]) and cfg.eeg["backend"] in wakeup.DIRECT_BACKENDS \
        and eeg_link(cfg) == "spi"


def host_check(floor: wakeup.WakeFloor) -> Check:
    """The verdict as a check: a host that cannot hold the rate is a WARN (saved for run)."""
    wakeup.save(floor)
    return Check("host", True, floor.sentence(), warn=not floor.holds)


def _result(m: wakeup.Measurement | None) -> dict[str, Any] | None:
    if m is None:
        return None
    try:
        return m.result()
    except Exception:  # a worker that died or hung: the idle figure still stands
        return None


def _test_config(cfg: RigConfig) -> RigConfig:
    return replace(cfg, eeg={**cfg.eeg, "input": "test"}, rig={**cfg.rig, "record": False})


def run_checks(cfg: RigConfig) -> list[Check]:
    from edge.rig import EEG_RT_PRIORITY, open_rig

    # The wake floor as `bench wakeup` takes it: on the idle host first, then beside the
    # running rig (the selftest's own acquisition).
    fs, idle, beside = float(cfg.eeg["fs_hz"]), None, None
    if direct_mode(cfg):
        idle = wakeup.WakeFloor.from_result(
            fs, WAKE_CHECK_S, wakeup.measure(fs, WAKE_CHECK_S, EEG_RT_PRIORITY))
    cfg = _test_config(cfg)
    try:
        rig = open_rig(cfg, duration_s=ACQUIRE_S + 5)
    except DeviceError as exc:
        return [Check("open", False, str(exc)), *([host_check(idle)] if idle else [])]
    from edge.processing import LocalOutlet
    from edge.runtime import build_session

    collect = _Collect()
    # The EEG stream's own rate: a Cyton with the Daisy streams at half the board's.
    eeg_fs = float(rig.eeg.info.fs_hz) if rig.eeg is not None and rig.eeg.info else 0.0
    try:  # the run's chain of sinks, without processing or recording
        session = build_session(cfg, rig, record=False, outlet=LocalOutlet(),
                                processing=False, probes=[collect])
    except BaseException:
        rig.close()
        raise
    if idle is not None:  # spawned now, so its start-up does not load the acquisition
        beside = wakeup.Measurement(fs, BESIDE_RIG_S, EEG_RT_PRIORITY)
    session.start()
    t_end = time.monotonic() + ACQUIRE_S
    if beside is not None:
        beside.start()
    try:  # the rig runs until the time is up and the measurement beside it is done
        while time.monotonic() < t_end or (
                beside is not None and not beside.ready() and time.monotonic() < t_end + 20):
            session.step(0.01)
        beside_r = _result(beside)
    finally:
        session.stop()
        session.close()
        if beside is not None:
            beside.close()
    checks = []
    if cfg.eeg["enabled"]:
        checks.append(check_eeg(collect.blocks.get("eeg", []), eeg_fs))
    if cfg.hub["enabled"]:
        checks.append(check_hub(collect.blocks.get("hub", []), float(cfg.hub["fs_hz"])))
    if cfg.camera["enabled"]:
        checks.append(check_camera(collect.frame_t_ns, float(cfg.camera["fps"])))
    checks.append(check_trigger(collect.blocks))
    checks += [Check("runtime", False, e) for e in session.runtime.errors[:3]]
    if idle is not None:  # (idle alone if the measurement beside the rig failed)
        checks.append(host_check(idle if beside_r is None else idle.plus(
            wakeup.WakeFloor.from_result(fs, BESIDE_RIG_S, beside_r,
                                         conditions="beside the rig"))))
    return checks


def selftest(cfg: RigConfig, as_json: bool = False) -> int:
    checks = run_checks(cfg)
    for c in checks:
        word = "FAIL" if not c.ok else "WARN" if c.warn else "PASS"
        print(f"{word}  {c.device:8s} {c.detail}", flush=True)
    ok = all(c.ok for c in checks)
    if as_json:
        doc: dict[str, Any] = {c.device: {"ok": c.ok, "warn": c.warn, "detail": c.detail}
                               for c in checks}
        print(json.dumps({"ok": ok, "devices": doc}))
    return 0 if ok else 1
