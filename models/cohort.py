"""A simulated cohort for training the fusion model, built from the HIL machinery.

Every subject gets their own baselines and responsiveness (:class:`hil.sim.scenario.Subject`)
and a session of micro-expression events, five per emotion in random order, about 12 s
apart. Per event, the same code paths as the device produce the model inputs:

* visual: the simulated camera (:class:`hil.sim.camera.SimCamera`) renders the frame
  before onset and the apex frame; :class:`edge.spotting.face.FaceTracker` crops them and
  :func:`edge.spotting.visual.visual_features` makes the 28x28x3 flow/strain input. AUs
  are a random subset of the emotion's prototype (each kept with p = 0.7, one at least)
  plus sometimes a distractor AU; intensity runs from barely visible to obvious, scaled
  by the subject's expressivity; some events carry a small head movement;
* physiology: :class:`hil.sim.physio.PhysioModel` signals (responses from
  :func:`hil.sim.scenario.response_for`) at the rig's 1000 Hz, streamed in 40-ms blocks
  through :class:`edge.features.FeaturePipeline`; inputs from
  :func:`edge.fusion.event_inputs` at the apex, as on the device;
* EEG: :class:`hil.sim.eeg_model.EegModel` background and alpha, plus emotion-dependent band
  changes around the apex added here (:data:`EEG_EFFECTS`: modest log-amplitude gains per
  band and a frontal alpha/beta asymmetry, scaled per subject, with per-subject biases and
  per-trial noise), through the same pipeline.

``python -m models.cohort --subjects 24 --seed 0`` writes ``artifacts/cohort_s0_n24.npz``;
:func:`load_or_generate` caches it there. Subjects run in parallel processes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from scipy import signal

from edge.fusion import EEG_CHANNELS, EMOTIONS, PERIPH_NAMES, event_inputs
from hil.sim.scenario import (
    COMPOSITE,
    EMOTION_AUS,
    Blink,
    ExpressionEvent,
    HeadMove,
    MarkerEvent,
    Scenario,
    Subject,
    response_for,
)

COHORT_VERSION = 1
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
COMPOSITES = ("negative", "positive", "surprise")
EVENTS_PER_EMOTION = 5
SPACING_S = 12.0
FIRST_APEX_S = 24.0  # leaves the breathing baseline (apex - 10 s) past the RSP warm-up
HUB_FS = 1000.0
EEG_FS = 1000.0
CAMERA_FPS = 150.0
_BLOCK_S = 0.04
_ALL_AUS = sorted({au for aus in EMOTION_AUS.values() for au in aus})
_BAND_EDGES = ((1.0, 4.0), (4.0, 8.0), (8.0, 13.0), (13.0, 30.0), (30.0, 47.0))

# Log-amplitude gain per band (delta..gamma) around the apex, and a frontal asymmetry
# (added on right sites, subtracted on left) for alpha and beta. Loosely after the
# affective-EEG literature: arousal suppresses alpha and raises beta/gamma, surprise
# (orienting) raises theta/delta, approach emotions shift frontal activity left.
EEG_EFFECTS: dict[str, tuple[tuple[float, ...], float]] = {
    "angry": ((0.0, 0.05, -0.15, 0.20, 0.20), 0.15),
    "disgust": ((0.10, 0.15, -0.10, 0.05, 0.15), -0.15),
    "fear": ((0.05, 0.10, -0.20, 0.25, 0.15), -0.20),
    "sad": ((0.10, 0.10, 0.15, -0.10, -0.05), -0.10),
    "happy": ((0.0, 0.0, -0.15, 0.15, 0.25), 0.20),
    "surprise": ((0.25, 0.30, -0.25, 0.05, 0.10), 0.0),
    "tense": ((0.0, 0.05, -0.05, 0.20, 0.10), -0.05),
}
# Per channel: hemisphere sign (-1 left, +1 right) and asymmetry weight (frontal strongest).
_HEMI = np.array([-1, 1, -1, 1, -1, 1, -1, 1], float)
_ASYM_W = np.array([1.0, 1.0, 0.5, 0.5, 0.3, 0.3, 0.2, 0.2])


def draw_subject(k: int, rng: np.random.Generator) -> Subject:
    """Baselines and responsiveness of subject k; about 10 % respond barely at all."""
    resp = 0.15 if rng.random() < 0.1 else float(np.clip(rng.lognormal(0.0, 0.3), 0.4, 2.0))
    return Subject(
        subject_id=f"sim{k:02d}",
        hr_bpm=float(rng.uniform(58, 85)), rr_bpm=float(rng.uniform(11, 19)),
        scl_us=float(rng.uniform(2, 12)), skt_c=float(rng.uniform(30.5, 35)),
        eeg_alpha_uv=float(rng.uniform(5, 15)), responsiveness=resp,
    )


def _aus_for(emotion: str, rng: np.random.Generator) -> tuple[str, ...]:
    proto = EMOTION_AUS[emotion]
    keep = [au for au in proto if rng.random() < 0.7] or [proto[int(rng.integers(len(proto)))]]
    if rng.random() < 0.25:  # a distractor AU from elsewhere in the face
        others = [au for au in _ALL_AUS if au not in proto]
        keep.append(others[int(rng.integers(len(others)))])
    return tuple(keep)


def subject_scenario(k: int, seed: int) -> tuple[Scenario, dict]:
    """Scenario of subject k and the per-subject nuisance parameters."""
    rng = np.random.default_rng([seed, k, 0])
    subj = draw_subject(k, rng)
    emotions = np.repeat(np.arange(len(EMOTIONS)), EVENTS_PER_EMOTION)
    rng.shuffle(emotions)
    expressivity = float(rng.uniform(0.5, 1.2))
    exprs, markers, moves = [], [MarkerEvent(0.5, 100)], []
    for i, e in enumerate(emotions):
        emo = EMOTIONS[int(e)]
        apex = FIRST_APEX_S + i * SPACING_S + float(rng.uniform(-1.0, 1.0))
        dur = float(rng.uniform(0.3, 0.5))
        onset = apex - dur * float(rng.uniform(0.35, 0.6))
        exprs.append(ExpressionEvent(
            onset_s=round(onset, 4), apex_s=round(apex, 4), offset_s=round(onset + dur, 4),
            aus=_aus_for(emo, rng), emotion=emo,
            intensity=float(np.clip(rng.uniform(0.15, 1.0) * expressivity, 0.1, 1.0)),
            response=response_for(emo, rng, subj.responsiveness)))
        markers.append(MarkerEvent(round(onset - 0.6, 3), 101 + int(rng.integers(48))))
        if rng.random() < 0.15:  # the head moves during the expression
            moves.append(HeadMove(round(onset - 0.1, 3), float(rng.uniform(0.3, 0.6)),
                                  float(rng.normal(0, 1.5)), float(rng.normal(0, 1.0))))
    duration = exprs[-1].apex_s + 10.0
    busy = [(x.onset_s - 0.3, x.offset_s + 0.3) for x in exprs]
    blinks = [Blink(round(float(t), 3), float(rng.uniform(0.1, 0.2)))
              for t in np.sort(rng.uniform(1, duration - 1, int(duration / 60 * 12)))
              if all(t + 0.2 < a or t > b for a, b in busy)]
    scen = Scenario(duration_s=duration, seed=seed * 1000 + k, subject=subj,
                    markers=tuple(markers), expressions=tuple(exprs), blinks=tuple(blinks),
                    head_moves=tuple(moves))
    nuisance = {"expressivity": expressivity, "noise_sigma": float(rng.uniform(1.5, 3.5)),
                "gain": float(rng.uniform(0.85, 1.15)),
                "eeg_effect_scale": float(rng.uniform(0.4, 1.3))}
    return scen, nuisance


def add_emotion_eeg(x: np.ndarray, fs: float, scen: Scenario, effect_scale: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Scale each band's content around every apex by the emotion's gain (see EEG_EFFECTS).

    Band components are zero-phase band-passes of the EEG itself, so the change is a
    genuine power change (down as well as up) with the background's own spectrum.
    """
    t = np.arange(x.shape[0]) / fs
    bands = np.stack([signal.sosfiltfilt(signal.butter(4, e, "bandpass", fs=fs, output="sos"),
                                         x, axis=0) for e in _BAND_EDGES])  # (5, n, c)
    bias = {emo: rng.normal(0, 0.08, 5) for emo in EMOTIONS}  # the subject's own pattern
    gain_minus_1 = np.zeros((5, *x.shape))
    for ev in scen.expressions:
        glob, asym = EEG_EFFECTS[ev.emotion]
        lg = effect_scale * (np.asarray(glob)[:, None]
                             + np.array([0, 0, asym, asym * 0.5, 0])[:, None] * _HEMI * _ASYM_W)
        lg = lg + bias[ev.emotion][:, None] + rng.normal(0, 0.12, (5, 1)) \
            + rng.normal(0, 0.06, (5, x.shape[1]))
        i0, i1 = np.searchsorted(t, [ev.apex_s - 0.9, ev.apex_s + 1.0])
        u = (t[i0:i1] - (ev.apex_s - 0.9)) / 1.9
        env = np.clip(np.minimum(u, 1 - u) / 0.15, 0, 1)  # flat over the 1-s epoch
        env = 0.5 - 0.5 * np.cos(np.pi * env)
        gain_minus_1[:, i0:i1, :] += (np.exp(lg) - 1.0)[:, None, :] * env[None, :, None]
    return x + (gain_minus_1 * bands).sum(axis=0)


def visual_input(scen: Scenario, nuisance: dict, seed: int) -> np.ndarray:
    """The model's visual input for one scenario: the simulated camera through the spotter's
    face tracker and visual features."""
    from edge.spotting.face import FaceStatus, FaceTracker
    from edge.spotting.visual import visual_features
    from hil.sim.camera import SimCamera

    cam = SimCamera(scen, fps=CAMERA_FPS, seed=seed, noise_sigma=nuisance["noise_sigma"])
    cam.set_lighting(nuisance["gain"])
    out = np.zeros((len(scen.expressions), 28, 28, 3), np.float32)
    for i, ev in enumerate(scen.expressions):
        tracker = FaceTracker(CAMERA_FPS)
        a = tracker.update(cam.render(ev.onset_s - 1.0 / CAMERA_FPS))
        b = tracker.update(cam.render(ev.apex_s))
        if a.status == FaceStatus.OK and b.status == FaceStatus.OK:
            out[i] = visual_features(a.crop, b.crop).stst
    return out


def _physio(scen: Scenario, nuisance: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from edge.features import FeaturePipeline
    from hil.benchmarks.features import T0_NS, eeg_info, hub_info, make_blocks
    from hil.sim.eeg_model import EegModel
    from hil.sim.physio import PhysioModel

    n_hub = int(scen.duration_s * HUB_FS)
    t_hub = np.arange(n_hub) / HUB_FS
    hub = PhysioModel(scen).chunk(t_hub)
    n_eeg = int(scen.duration_s * EEG_FS)
    t_eeg = np.arange(n_eeg) / EEG_FS
    eeg = EegModel(EEG_CHANNELS, EEG_FS, seed=scen.seed, scenario=scen).next(n_eeg, t_eeg)
    eeg = add_emotion_eeg(eeg, EEG_FS, scen, nuisance["eeg_effect_scale"],
                          np.random.default_rng([seed, 7]))
    ei, hi = eeg_info(EEG_FS, EEG_CHANNELS), hub_info(HUB_FS)
    eb = make_blocks(ei, eeg, int(_BLOCK_S * EEG_FS))
    hb = make_blocks(hi, hub, int(_BLOCK_S * HUB_FS))
    pipe = FeaturePipeline(ei, hi)
    apex_ns = [T0_NS + round(ev.apex_s * 1e9) for ev in scen.expressions]
    eeg_x = np.zeros((len(apex_ns), 80), np.float32)
    per_x = np.zeros((len(apex_ns), len(PERIPH_NAMES)), np.float32)
    nxt = 0
    for e, h in zip(eb, hb, strict=False):
        pipe.update(e)
        pipe.update(h)
        now = int(h.host_t_ns[-1])
        # Ask once every window has closed (the device waits for EventWindow.ready).
        while nxt < len(apex_ns) and now > apex_ns[nxt] + 8_000_000_000:
            eeg_x[nxt], per_x[nxt] = event_inputs(pipe, apex_ns[nxt])
            nxt += 1
    while nxt < len(apex_ns):
        eeg_x[nxt], per_x[nxt] = event_inputs(pipe, apex_ns[nxt])
        nxt += 1
    return eeg_x, per_x


def generate_subject(k: int, seed: int) -> dict[str, np.ndarray]:
    """All events of subject k: inputs, labels and ground truth."""
    scen, nuisance = subject_scenario(k, seed)
    vis = visual_input(scen, nuisance, seed * 1000 + k)
    eeg, per = _physio(scen, nuisance, seed)
    ev = scen.expressions
    return {
        "visual": vis, "eeg": eeg, "periph": per,
        "emotion": np.array([EMOTIONS.index(e.emotion) for e in ev], np.int64),
        "composite": np.array([COMPOSITES.index(COMPOSITE[e.emotion]) for e in ev], np.int64),
        "subject": np.full(len(ev), k, np.int64),
        "intensity": np.array([e.intensity for e in ev], np.float32),
        "subject_params": np.array(json.dumps({**asdict(scen.subject), **nuisance})),
    }


def generate(n_subjects: int = 24, seed: int = 0, workers: int = 2) -> dict[str, np.ndarray]:
    """The whole cohort (subjects in parallel processes), concatenated."""
    with ProcessPoolExecutor(max_workers=workers) as ex:
        parts = list(ex.map(generate_subject, range(n_subjects), [seed] * n_subjects))
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "subject_params"}
    out["subject_params"] = np.array([str(p["subject_params"]) for p in parts])
    out["version"] = np.array(COHORT_VERSION)
    return out


def _source_hash() -> str:
    """Changes whenever this generator changes, so a stale cache is not used. Shared code
    (hil/, edge/features, edge/spotting) is not hashed: those change under parallel work
    without changing the data's meaning; after a change there, pass ``--fresh``."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def cache_path(n_subjects: int, seed: int, root: Path = ARTIFACTS) -> Path:
    return root / f"cohort_s{seed}_n{n_subjects}_{_source_hash()}.npz"


def load_or_generate(n_subjects: int = 24, seed: int = 0, root: Path = ARTIFACTS,
                     workers: int = 2, fresh: bool = False) -> dict[str, np.ndarray]:
    path = cache_path(n_subjects, seed, root)
    if path.is_file() and not fresh:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    data = generate(n_subjects, seed, workers)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **data)
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.cohort")
    ap.add_argument("--subjects", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fresh", action="store_true", help="regenerate even if cached")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    d = load_or_generate(args.subjects, args.seed, workers=args.workers, fresh=args.fresh)
    print(f"{d['emotion'].size} events from {args.subjects} subjects in "
          f"{time.perf_counter() - t0:.1f} s -> {cache_path(args.subjects, args.seed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
