"""Scenarios: a scripted session with known ground truth.

A scenario lists stimulus markers, facial expression events (with their AUs, emotion,
intensity and time course), blinks, head movements, and each event's physiological
response. Times are seconds from the start of the run. Scenarios load from TOML or are
generated from a seed; :func:`Scenario.ground_truth` is what the bench scores against and
what ``write_ground_truth`` puts next to a run.

TOML layout::

    duration_s = 60
    seed = 7
    [subject]            # optional baselines
    hr_bpm = 68
    [[markers]]
    t_s = 2.0
    code = 101
    [[expressions]]
    onset_s = 5.0
    apex_s = 5.15
    offset_s = 5.35
    aus = ["AU4", "AU7"]
    emotion = "disgust"
    intensity = 0.8      # 0..1, 1 is an obvious movement
    [[blinks]]
    t_s = 9.0

Or, instead of listing events, ask for a generated session (see :func:`generate`)::

    [generate]
    duration_s = 90
    n_events = 12
    seed = 3
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

EMOTIONS = ("angry", "disgust", "fear", "sad", "happy", "surprise", "tense")
COMPOSITE = {
    "angry": "negative",
    "disgust": "negative",
    "fear": "negative",
    "sad": "negative",
    "tense": "negative",
    "happy": "positive",
    "surprise": "surprise",
}
# Prototype action units per emotion (FACS/EMFACS), used to render and to label.
EMOTION_AUS: dict[str, tuple[str, ...]] = {
    "angry": ("AU4", "AU7", "AU23"),
    "disgust": ("AU9", "AU10"),
    "fear": ("AU1", "AU2", "AU4", "AU20"),
    "sad": ("AU1", "AU4", "AU15"),
    "happy": ("AU6", "AU12"),
    "surprise": ("AU1", "AU2", "AU5"),
    "tense": ("AU14", "AU24"),
}
ME_MAX_S = 0.5  # micro-expression: at most 500 ms onset to offset


@dataclass(frozen=True)
class Subject:
    """Per-subject baselines and response strengths."""

    subject_id: str = "sim01"
    hr_bpm: float = 70.0
    rr_bpm: float = 15.0  # breaths per minute
    scl_us: float = 5.0  # tonic skin conductance, microsiemens
    skt_c: float = 33.5  # fingertip temperature
    eeg_alpha_uv: float = 10.0
    responsiveness: float = 1.0  # scales all physiological responses (0: non-responder)


@dataclass(frozen=True)
class MarkerEvent:
    t_s: float
    code: int  # 100 rest, 101..148 stimulus clips


@dataclass(frozen=True)
class PhysioResponse:
    """What the body does after an expression event (literature-shaped, see hil.sim.physio)."""

    scr_latency_s: float = 2.0
    scr_amp_us: float = 0.3
    hr_delta_bpm: float = -3.0  # deceleration is negative
    resp_pause_s: float = 0.0  # extra inspiratory pause (disgust)
    skt_delta_c: float = -0.05


@dataclass(frozen=True)
class ExpressionEvent:
    onset_s: float
    apex_s: float
    offset_s: float
    aus: tuple[str, ...]
    emotion: str
    intensity: float = 1.0
    response: PhysioResponse = field(default_factory=PhysioResponse)

    @property
    def kind(self) -> str:
        return "micro" if (self.offset_s - self.onset_s) <= ME_MAX_S else "macro"

    def __post_init__(self) -> None:
        if not (self.onset_s < self.apex_s < self.offset_s):
            raise ValueError(f"expression at {self.onset_s}s: need onset < apex < offset")
        if self.emotion not in EMOTIONS:
            raise ValueError(f"expression at {self.onset_s}s: unknown emotion {self.emotion!r}")


@dataclass(frozen=True)
class Blink:
    t_s: float
    duration_s: float = 0.15


@dataclass(frozen=True)
class HeadMove:
    t_s: float
    duration_s: float = 0.4
    dx_px: float = 3.0
    dy_px: float = 1.0


@dataclass(frozen=True)
class Scenario:
    duration_s: float
    seed: int = 0
    subject: Subject = field(default_factory=Subject)
    markers: tuple[MarkerEvent, ...] = ()
    expressions: tuple[ExpressionEvent, ...] = ()
    blinks: tuple[Blink, ...] = ()
    head_moves: tuple[HeadMove, ...] = ()

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: dict) -> Scenario:
        if "generate" in doc:
            gen = dict(doc["generate"])
            subject = Subject(**doc["subject"]) if "subject" in doc else None
            return generate(float(gen.pop("duration_s")), int(gen.pop("n_events")),
                            subject=subject, **gen)
        exprs = []
        for e in doc.get("expressions", []):
            e = dict(e)
            resp = PhysioResponse(**e.pop("response", {}))
            e.setdefault("aus", EMOTION_AUS.get(e.get("emotion", ""), ()))
            exprs.append(ExpressionEvent(**{**e, "aus": tuple(e["aus"]), "response": resp}))
        return cls(
            duration_s=float(doc["duration_s"]),
            seed=int(doc.get("seed", 0)),
            subject=Subject(**doc.get("subject", {})),
            markers=tuple(MarkerEvent(**m) for m in doc.get("markers", [])),
            expressions=tuple(sorted(exprs, key=lambda x: x.onset_s)),
            blinks=tuple(Blink(**b) for b in doc.get("blinks", [])),
            head_moves=tuple(HeadMove(**h) for h in doc.get("head_moves", [])),
        )

    def ground_truth(self) -> dict:
        return {
            "duration_s": self.duration_s,
            "seed": self.seed,
            "subject": asdict(self.subject),
            "markers": [asdict(m) for m in self.markers],
            "expressions": [
                {**asdict(e), "kind": e.kind, "composite": COMPOSITE[e.emotion]}
                for e in self.expressions
            ],
            "blinks": [asdict(b) for b in self.blinks],
            "head_moves": [asdict(h) for h in self.head_moves],
        }

    def write_ground_truth(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.ground_truth(), indent=1))


def response_for(emotion: str, rng: np.random.Generator, strength: float = 1.0) -> PhysioResponse:
    """Draw an emotion-dependent physiological response.

    Effect sizes follow the psychophysiology literature loosely: SCR 1-3 s after the
    event with larger amplitude for arousing emotions; heart-rate deceleration that is
    stronger for negative stimuli (acceleration for happy); a prolonged inspiratory pause
    for disgust; fingertip cooling with vasoconstriction. Noise keeps the classes
    overlapping so no single modality separates them.
    """
    arousal = {"angry": 0.9, "fear": 1.0, "surprise": 0.9, "disgust": 0.7,
               "tense": 0.6, "sad": 0.4, "happy": 0.6}[emotion]
    hr = {"angry": -2.0, "fear": -5.0, "sad": -4.0, "disgust": -4.5,
          "tense": -2.5, "happy": 2.5, "surprise": -1.5}[emotion]
    pause = {"disgust": 1.2, "fear": 0.5}.get(emotion, 0.0)
    s = max(strength, 0.0)
    return PhysioResponse(
        scr_latency_s=float(np.clip(rng.normal(2.0, 0.5), 1.0, 3.0)),
        scr_amp_us=float(max(0.0, rng.normal(0.5 * arousal, 0.15)) * s),
        hr_delta_bpm=float(rng.normal(hr, 1.5) * s),
        resp_pause_s=float(max(0.0, rng.normal(pause, 0.3)) * s),
        skt_delta_c=float(rng.normal(-0.1 * arousal, 0.03) * s),
    )


def generate(
    duration_s: float,
    n_events: int,
    seed: int = 0,
    subject: Subject | None = None,
    micro_fraction: float = 0.5,
    intensity_range: tuple[float, float] = (0.3, 1.0),
    blinks_per_min: float = 12.0,
    head_moves_per_min: float = 3.0,
    first_s: float = 2.0,
) -> Scenario:
    """A random session: one stimulus marker before each expression, distractors between.

    Events are spaced so their physiological windows (about 5 s) do not overlap when the
    duration allows it; blinks and head moves avoid the expressions themselves.
    """
    rng = np.random.default_rng(seed)
    subject = subject or Subject()
    usable = max(duration_s - first_s - 1.0, 1.0)
    slot = usable / max(n_events, 1)
    markers: list[MarkerEvent] = [MarkerEvent(0.5, 100)]
    exprs: list[ExpressionEvent] = []
    for i in range(n_events):
        emotion = EMOTIONS[int(rng.integers(len(EMOTIONS)))]
        micro = rng.random() < micro_fraction
        dur = rng.uniform(0.25, 0.45) if micro else rng.uniform(0.7, 2.0)
        dur = min(dur, slot * 0.6)
        start = first_s + i * slot + rng.uniform(0.15, max(0.2, slot - dur - 0.1)) * 0.5
        apex = start + dur * rng.uniform(0.35, 0.6)
        markers.append(MarkerEvent(round(max(start - 0.6, 0.05), 3), 101 + int(rng.integers(48))))
        exprs.append(
            ExpressionEvent(
                onset_s=round(start, 4),
                apex_s=round(apex, 4),
                offset_s=round(start + dur, 4),
                aus=EMOTION_AUS[emotion],
                emotion=emotion,
                intensity=float(rng.uniform(*intensity_range)),
                response=response_for(emotion, rng, subject.responsiveness),
            )
        )
    busy = [(e.onset_s - 0.3, e.offset_s + 0.3) for e in exprs]

    def free(t: float, d: float) -> bool:
        return all(t + d < a or t > b for a, b in busy)

    blinks = []
    for t in np.sort(rng.uniform(0.5, duration_s - 0.5, int(duration_s / 60 * blinks_per_min))):
        if free(float(t), 0.2):
            blinks.append(Blink(round(float(t), 3), float(rng.uniform(0.1, 0.2))))
    moves = []
    for t in np.sort(rng.uniform(0.5, duration_s - 1.0, int(duration_s / 60 * head_moves_per_min))):
        if free(float(t), 0.5):
            moves.append(
                HeadMove(round(float(t), 3), float(rng.uniform(0.3, 0.6)),
                         float(rng.normal(0, 3)), float(rng.normal(0, 2)))
            )
    return Scenario(
        duration_s=duration_s,
        seed=seed,
        subject=subject,
        markers=tuple(sorted(markers, key=lambda m: m.t_s)),
        expressions=tuple(exprs),
        blinks=tuple(blinks),
        head_moves=tuple(moves),
    )
