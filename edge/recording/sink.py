"""The recorder as a runtime sink: names the file, feeds it every block, frame, marker."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.config import RigConfig
from edge.recording.recorder import Recorder
from sensors.blocks import Frame, Marker, SampleBlock


class RecordingSink:
    name = "recorder"  # as the runtime counts its failures

    def __init__(self, recorder: Recorder, record_frames: bool, clock: Any | None = None
                 ) -> None:
        self.recorder = recorder
        self._clock = clock
        self.path = recorder.path
        self._frames = record_frames

    def on_block(self, block: SampleBlock) -> None:
        self.recorder.write_block(block)

    def on_frame(self, frame: Frame) -> None:
        if self._frames:
            self.recorder.write_frame(frame)

    def on_marker(self, marker: Marker) -> None:
        self.recorder.write_marker(marker)

    def close(self) -> dict[str, Any]:
        if self._clock is not None and getattr(self._clock, "recorder", None) is self.recorder:
            self._clock.attach_recorder(None)
        return self.recorder.close()


def recording_path(out_dir: Path, rig_id: str, session: str | None = None,
                   subject: str | None = None) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")[:-4] + "Z"
    who = "".join(f"_{x}" for x in (subject, session) if x)
    return out_dir / f"{rig_id}{who}_{stamp}.mcap"


def open_recording_sink(out_dir: Path, rig: Any, cfg: RigConfig, clock: Any | None = None,
                        session: str | None = None, subject: str | None = None,
                        face_box: Callable[[], Any] | None = None) -> RecordingSink:
    """The recording sink for ``rig``; ``clock`` (an ``edge.clock.keeper.ClockKeeper``) gets the
    recorder to write its clock states to; ``face_box`` is the spotter's tracked face (x,
    y, w, h in frame pixels, or None), which places the crop of the ``face`` store."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store = cfg.rig["camera_store"]
    camera = None
    if rig.camera is not None and store != "none":
        camera = {"store": store, "width": int(cfg.camera["width"]),
                  "height": int(cfg.camera["height"]), "fps": float(cfg.camera["fps"])}
        if store in ("lossless", "face"):
            camera["codec"] = str(cfg.rig["video_codec"])
        if store == "face":
            camera.update(face_crop=float(cfg.rig["face_crop"]),
                          context_fps=float(cfg.rig["context_fps"]))
    path = recording_path(out_dir, cfg.rig["id"], session, subject)
    recorder = Recorder(path, rig.stream_infos(), camera=camera, face_box=face_box,
                        min_free_bytes=int(cfg.rig["min_free_mb"]) * 2**20)
    if clock is not None:
        clock.attach_recorder(recorder)
    return RecordingSink(recorder, record_frames=camera is not None, clock=clock)
