"""Annotation readers: turn coding spreadsheets into ground-truth intervals.

* :func:`read_mmme_coding` reads the MMME "coding file" (columns Subject, Filename,
  Marker, OnsetTime/ApexTime/OffsetTime in seconds from the clip start,
  OnsetFrame/ApexFrame/OffsetFrame as ``HH-MM-SS-mmm-NNN``, Action Units, Estimated
  Emotion, Macro/Micro, Date, dif). ``NNN`` is the camera's frame counter, which wraps
  (seen 1..1000); in some rows it is missing (``HH-MM-SS-mmm``). Where present, onset
  keeps the raw counter and apex/offset are onset + the counter difference, unwrapped
  with the one wrap count that agrees best with the time columns; where missing, frame
  fields are None and the times are authoritative. ``dif`` is not used: it does not
  agree with either (often apex-onset+1).
* :func:`read_casme` reads CASME II / CAS(ME)^2-style sheets (Subject, Filename,
  OnsetFrame, ApexFrame, OffsetFrame, Action Units, Estimated Emotion); an apex of "/"
  (CASME II) is None; kind comes from a type column if there is one, else from the
  duration at ``fps``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from edge.evaluation.megc import Interval

COMPOSITE = {
    "angry": "negative", "anger": "negative", "disgust": "negative", "fear": "negative",
    "sad": "negative", "sadness": "negative", "tense": "negative", "contempt": "negative",
    "repression": "negative", "happy": "positive", "happiness": "positive",
    "surprise": "surprise",
}
ME_MAX_S = 0.5
_COUNTER_WRAP = 1000
_FRAME_RE = re.compile(r"^(\d{1,2})-(\d{1,2})-(\d{1,2})-(\d{1,3})(?:-(\d+))?$")


@dataclass(frozen=True)
class GroundTruth:
    subject: str
    video: str
    onset_s: float
    apex_s: float | None
    offset_s: float
    onset: int | None  # frame numbers (camera counter, unwrapped); None where unknown
    apex: int | None
    offset: int | None
    aus: tuple[str, ...]
    emotion: str
    composite: str  # negative / positive / surprise / other
    kind: str  # "micro" or "macro"
    marker: int | None = None
    onset_wall_ms: int | None = None  # wall-clock ms of day from the frame field (MMME)

    def interval(self, *, frames: bool = False) -> Interval:
        """The MEGC interval, in frames (needs the counter) or seconds."""
        if frames:
            if self.onset is None or self.offset is None:
                raise ValueError(f"{self.video}: no frame numbers in this row")
            return Interval(self.onset, self.offset, self.kind, self.video)
        return Interval(self.onset_s, self.offset_s, self.kind, self.video)


def parse_frame_field(s: object) -> tuple[int, int | None] | None:
    """``HH-MM-SS-mmm[-NNN]`` -> (wall-clock ms of day, counter or None)."""
    m = _FRAME_RE.match(str(s).strip())
    if not m:
        return None
    h, mi, se, ms, n = m.groups()
    wall = ((int(h) * 60 + int(mi)) * 60 + int(se)) * 1000 + int(ms)
    return wall, (int(n) if n is not None else None)


def _unwrap(base: int, counter: int, expect_frames: float) -> int:
    """base + the counter difference, choosing the wrap count closest to the expectation."""
    d = (counter - base) % _COUNTER_WRAP
    k = round((expect_frames - d) / _COUNTER_WRAP)
    return base + d + max(k, 0) * _COUNTER_WRAP


def parse_aus(s: object) -> tuple[str, ...]:
    """"AU4, AU7" / "4+7" / "R12" -> ("AU4", "AU7") ... (side prefixes kept off)."""
    out = []
    for tok in re.split(r"[,+;/\s]+", str(s or "")):
        m = re.match(r"^(?:AU)?[LRB]?(\d+)[A-E]?$", tok.strip(), re.IGNORECASE)
        if m:
            out.append(f"AU{int(m.group(1))}")
    return tuple(dict.fromkeys(out))


def _rows(path: str | Path) -> list[dict]:
    """Rows of the first sheet (xlsx) or a CSV, keyed by stripped header names."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        with open(p, newline="", encoding="utf-8-sig") as f:
            return [{(k or "").strip(): v for k, v in r.items()} for r in csv.DictReader(f)]
    try:
        import openpyxl  # deferred: only the xlsx readers need it
    except ImportError:
        raise ImportError(f"{p.name}: reading .xlsx coding files needs openpyxl: "
                          "pip install 'mmme-edge[annotations]' (or give a CSV)") from None
    wb = openpyxl.load_workbook(p, read_only=True, data_only=True)
    try:
        it = wb.worksheets[0].iter_rows(values_only=True)
        header = [str(h).strip() if h is not None else "" for h in next(it)]
        return [dict(zip(header, r, strict=False)) for r in it if any(v is not None for v in r)]
    finally:
        wb.close()


def _kind(raw: object, dur_s: float) -> str:
    s = str(raw or "").strip().lower()
    if s.startswith("mac"):
        return "macro"
    if s.startswith("mic"):
        return "micro"
    return "micro" if dur_s <= ME_MAX_S else "macro"


def read_mmme_coding(path: str | Path, *, fps: float = 150.0) -> list[GroundTruth]:
    """Ground truth from the MMME coding file (see module doc)."""
    out = []
    for r in _rows(path):
        on_s, ap_s, off_s = (float(r[c]) for c in ("OnsetTime", "ApexTime", "OffsetTime"))
        fields = [parse_frame_field(r.get(c)) for c in ("OnsetFrame", "ApexFrame", "OffsetFrame")]
        on = ap = off = None
        if all(f is not None and f[1] is not None for f in fields):
            c_on, c_ap, c_off = (f[1] for f in fields)  # type: ignore[index]
            on = c_on
            ap = _unwrap(c_on, c_ap, (ap_s - on_s) * fps)
            off = _unwrap(c_on, c_off, (off_s - on_s) * fps)
        emotion = str(r.get("Estimated Emotion") or "").strip().lower()
        marker = r.get("Marker")
        out.append(GroundTruth(
            subject=str(r.get("Subject") or "").strip(),
            video=str(r.get("Filename") or "").strip(),
            onset_s=on_s, apex_s=ap_s, offset_s=off_s, onset=on, apex=ap, offset=off,
            aus=parse_aus(r.get("Action Units")), emotion=emotion,
            composite=COMPOSITE.get(emotion, "other"),
            kind=_kind(r.get("Macro/Micro"), off_s - on_s),
            marker=int(marker) if marker not in (None, "") else None,
            onset_wall_ms=fields[0][0] if fields[0] is not None else None,
        ))
    return out


def _int_or_none(v: object) -> int | None:
    try:
        return int(float(str(v).strip()))
    except (TypeError, ValueError):
        return None


def read_casme(path: str | Path, *, fps: float = 200.0) -> list[GroundTruth]:
    """Ground truth from a CASME II (fps 200) / CAS(ME)^2 (fps 30) style sheet."""
    out = []
    for r in _rows(path):
        on, ap, off = (_int_or_none(r.get(c)) for c in ("OnsetFrame", "ApexFrame", "OffsetFrame"))
        if on is None or off is None:
            continue  # a row without its bounds is not an interval
        if off == 0:  # CAS(ME)^2 marks "no offset coded" as 0
            off = ap if ap is not None else on
        emotion = str(r.get("Estimated Emotion") or "").strip().lower()
        raw_kind = r.get("Type") or r.get("Macro/Micro") or r.get("Expression Type")
        out.append(GroundTruth(
            subject=str(r.get("Subject") or "").strip(),
            video=str(r.get("Filename") or "").strip(),
            onset_s=on / fps, apex_s=ap / fps if ap is not None else None, offset_s=off / fps,
            onset=on, apex=ap, offset=off, aus=parse_aus(r.get("Action Units")),
            emotion=emotion, composite=COMPOSITE.get(emotion, "other"),
            kind=_kind(raw_kind, (off - on) / fps),
        ))
    return out
