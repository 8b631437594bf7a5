"""The rig's configuration: one TOML file, validated where it is read.

Every key is declared once below with its type and allowed values; an unknown key, a
missing required one, or a bad value raises :class:`ConfigError` whose message names the
key and the problem in one line. ``edge.cli`` turns that into exit status 2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6): the same parser, as a package
    import tomli as tomllib


ADS1299_RATES_HZ = (250, 500, 1000, 2000, 4000, 8000, 16000)
ADS1299_GAINS = (1, 2, 4, 6, 8, 12, 24)
# EEG backends: direct mode on SPI ("spidev" is its old name), its emulator "sim", and
# the OpenBCI Cyton over serial with its emulator on a pty.
CYTON_BACKENDS = ("cyton", "sim-cyton")
SIMULATED_EEG = {"cyton": "sim-cyton", "sim-cyton": "sim-cyton"}  # --sim; others: "sim"
CYTON_PACKET_BITS = 33 * 10  # one 33-byte packet on an 8N1 line


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range; str() is one line."""


@dataclass(frozen=True)
class Key:
    type: type | tuple[type, ...]
    default: Any = ...
    choices: tuple | None = None
    lo: float | None = None
    hi: float | None = None
    item: type | None = None  # element type for lists
    length: tuple[int, int] | None = None  # allowed list length range

    @property
    def required(self) -> bool:
        return self.default is ...


GPIO_LINE = Key(int, lo=0, hi=1023)

SCHEMA: dict[str, dict[str, Key]] = {
    "rig": {
        "id": Key(str),
        "data_dir": Key(str, "recordings"),
        "record": Key(bool, True),
        # raw: luma bytes (zstd); lossless: whole frames, face: the face region at full
        # rate plus whole frames at context_fps, both through a lossless video codec.
        "camera_store": Key(str, "raw", choices=("raw", "lossless", "face", "jpeg", "none")),
        "face_crop": Key(float, 0.7, lo=0.1, hi=1.0),  # face crop height / frame height
        "context_fps": Key(float, 2.0, lo=0.0, hi=1000.0),  # whole frames beside the face
        # The software codec of the video stores (NVENC is tried first where present).
        "video_codec": Key(str, "ffv1", choices=("ffv1", "x264")),
        # Recording stops cleanly with this much left on its file system.
        "min_free_mb": Key(int, 1024, lo=0, hi=1 << 30),
    },
    "gpio": {
        "backend": Key(str, "auto", choices=("auto", "gpiod", "rpi", "jetson", "sim")),
        "chip": Key(str, "/dev/gpiochip0"),
        "sync_out_line": GPIO_LINE,
        "marker_strobe_line": GPIO_LINE,
        "marker_data_lines": Key(list, item=int, length=(1, 8)),
    },
    "eeg": {
        "enabled": Key(bool, True),
        # spi: the chips on the host's SPI, DRDY serviced by the host (one bus per chip);
        # bridge: the chips behind the EEG bridge's FIFO (docs/eeg-bridge-protocol.md), on
        # spi_devices[0]; sim: the simulated bench (sim.eeg_link says which of the two);
        # cyton / sim-cyton: the OpenBCI board over serial. "spidev" is the old name of "spi".
        "backend": Key(str, "spi", choices=("spi", "spidev", "bridge", "sim", *CYTON_BACKENDS)),
        "spi_bus": Key(int, 0, lo=0, hi=7),
        "spi_devices": Key(list, [0], item=int, length=(1, 2)),
        "spi_hz": Key(int, 4_000_000, lo=100_000, hi=20_000_000),
        "drdy_line": Key(int, -1, lo=-1, hi=1023),  # required for direct SPI only
        "reset_line": Key(int, -1, lo=-1, hi=1023),
        "fs_hz": Key(int, 1000, choices=ADS1299_RATES_HZ),
        # One gain for every channel, or one per channel (values from ADS1299_GAINS).
        "gain": Key((int, list), 24, item=int, length=(8, 64)),
        "channels": Key(list, item=str, length=(8, 64)),  # 8 per chip
        "input": Key(str, "normal", choices=("normal", "shorted", "test")),
        "bias": Key(bool, True),
        "srb1": Key(bool, True),
        "lead_off": Key(bool, True),
        "drain_ms": Key(int, 20, lo=10, hi=50),  # bridge: one FIFO burst read this often
        # bridge: drain from an own process instead of a pump thread in the rig's process
        "bridge_process": Key(bool, False),
        # cyton: the dongle's serial port and baud (8 or 16 channels: with the Daisy)
        "port": Key(str, "/dev/ttyUSB0"),
        "baud": Key(int, 115200, lo=9600, hi=4_000_000),
    },
    "hub": {
        "enabled": Key(bool, True),
        "backend": Key(str, "serial", choices=("serial", "sim")),
        "port": Key(str, "/dev/mmme-hub"),
        "baud": Key(int, 921600, lo=9600, hi=4_000_000),
        "fs_hz": Key(int, 1000, lo=250, hi=2000),
    },
    "camera": {
        "enabled": Key(bool, True),
        "backend": Key(str, "picamera2", choices=("picamera2", "opencv", "sim")),
        "device": Key((int, str), 0),
        "width": Key(int, 320, lo=64, hi=4096),
        "height": Key(int, 240, lo=64, hi=4096),
        "fps": Key(float, 150.0, lo=1.0, hi=1000.0),
        "exposure_us": Key(int, 4000, lo=10, hi=1_000_000),
        # Capture buffers as time: how long the frame reader may be held up before
        # frames are lost (sensors.camera.buffers_for).
        "buffer_s": Key(float, 0.1, lo=0.02, hi=1.0),
    },
    "features": {
        "mains_hz": Key(int, 50, choices=(50, 60)),
        # EEG band features on these channels only (names from eeg.channels); [] = all.
        "eeg_channels": Key(list, [], item=str, length=(0, 64)),
        # A PPG sensor whose output falls as blood volume rises (some wrist and ear parts).
        "ppg_inverted": Key(bool, False),
    },
    "mqtt": {
        "enabled": Key(bool, True),
        "host": Key(str, "localhost"),
        "port": Key(int, 1883, lo=1, hi=65535),
        "protocol": Key(str, "5", choices=("5", "3.1.1")),
        "keepalive_s": Key(int, 30, lo=5, hi=3600),
        "tls": Key(bool, False),
        "ca_file": Key(str, ""),
        "cert_file": Key(str, ""),
        "key_file": Key(str, ""),
        "credentials_file": Key(str, ""),
        "outbox": Key(str, "outbox.sqlite"),
    },
    "sim": {
        "scenario": Key(str, ""),
        "seed": Key(int, 1),
        "n_events": Key(int, 12, lo=0, hi=10_000),
        "eeg_drift_ppm": Key(float, 40.0, lo=-500, hi=500),
        "hub_drift_ppm": Key(float, -60.0, lo=-500, hi=500),
        "camera_drift_ppm": Key(float, 25.0, lo=-500, hi=500),
        # Fault injection for selftest checks: the ID the emulated EEG chip answers.
        "eeg_chip_id": Key(int, 0x3E, lo=0, hi=255),
        # Which EEG front end the bench emulates for eeg.backend = "sim"; --sim keeps the
        # config's own ("spi" or "bridge").
        "eeg_link": Key(str, "bridge", choices=("bridge", "spi")),
        # The emulated bridge MCU in a process of its own, as the real one is a chip of its
        # own: off the rig's GIL and CPU books. Its fault hooks then live in that process.
        "bridge_mcu_process": Key(bool, False),
        # The simulated camera's sensor in a process of its own (rendering off the rig's
        # GIL and CPU books, as a real sensor is hardware); its fault hooks live there.
        "camera_process": Key(bool, False),
    },
    # Replay (hil.sim.playback): devices on the simulated bench play recorded streams.
    "replay": {
        "recording": Key(str, ""),  # a rig recording (.mcap): every stream it has
        "hub": Key(str, ""),  # one stream from a WFDB record, EDF/BDF, CSV or .mcap
        "eeg": Key(str, ""),
        "camera": Key(str, ""),  # frames come from a rig recording (.mcap)
        "channel_map": Key(dict, {}),  # hub channel = source channel, e.g. {ppg = "PLETH"}
        "start_s": Key(float, 0.0, lo=0.0),  # play from this far into the source
        "span_s": Key(float, 0.0, lo=0.0),  # this long (0: to the end)
    },
}
OPTIONAL_SECTIONS = {"features", "mqtt", "sim", "eeg", "hub", "camera", "replay"}


@dataclass(frozen=True)
class RigConfig:
    """The validated config: one plain dict per section, every key present."""

    rig: dict[str, Any]
    gpio: dict[str, Any]
    eeg: dict[str, Any]
    hub: dict[str, Any]
    camera: dict[str, Any]
    features: dict[str, Any]
    mqtt: dict[str, Any]
    sim: dict[str, Any]
    replay: dict[str, Any]
    source: str = ""

    def digest(self) -> str:
        """A short hash of the effective config, published in the status message."""
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "source"}
        blob = json.dumps(doc, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def _sim_eeg_link(self) -> str:
        """What the bench emulates for an ADS1299 front end: the config's own one."""
        link = eeg_link(self)
        return link if link in ("spi", "bridge") else str(self.sim["eeg_link"])

    def with_all_simulated(self) -> RigConfig:
        """The same rig with every device on the simulated bench (``--sim``)."""
        return RigConfig(
            rig=self.rig,
            gpio={**self.gpio, "backend": "sim"},
            eeg={**self.eeg, "backend": SIMULATED_EEG.get(self.eeg["backend"], "sim")},
            hub={**self.hub, "backend": "sim"},
            camera={**self.camera, "backend": "sim"},
            features=self.features,
            mqtt=self.mqtt,
            sim={**self.sim, "eeg_link": self._sim_eeg_link()},
            replay=self.replay,
            source=self.source,
        )

    def with_replay(self, **replay: Any) -> RigConfig:
        """The same rig on the simulated bench, replaying what ``replay`` names ([replay])."""
        cfg = self.with_all_simulated()
        merged = {**cfg.replay, **replay}
        return dataclasses.replace(cfg, replay=_check_section("replay", merged))


def eeg_link(cfg: RigConfig) -> str:
    """The EEG front end a config describes: "spi" (direct), "bridge", or a Cyton backend."""
    backend = cfg.eeg["backend"]
    if backend == "sim":
        return str(cfg.sim["eeg_link"])
    return "spi" if backend == "spidev" else str(backend)


def _type_name(t: type | tuple[type, ...]) -> str:
    names = [x.__name__ for x in (t if isinstance(t, tuple) else (t,))]
    return " or ".join({"str": "a string", "int": "an integer", "float": "a number",
                        "bool": "true/false", "list": "a list",
                        "dict": "a table"}.get(n, n) for n in names)


def _check_value(where: str, key: Key, value: Any) -> Any:
    allowed = key.type if isinstance(key.type, tuple) else (key.type,)
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    # bool is an int in Python; a config `true` where a number is wanted is a mistake.
    if isinstance(value, bool) and bool not in allowed:
        raise ConfigError(f"{where}: expected {_type_name(key.type)}, got {value!r}")
    if not isinstance(value, allowed):
        raise ConfigError(f"{where}: expected {_type_name(key.type)}, got {value!r}")
    if key.choices is not None and value not in key.choices:
        opts = ", ".join(str(c) for c in key.choices)
        raise ConfigError(f"{where}: must be one of {opts}; got {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if key.lo is not None and value < key.lo:
            raise ConfigError(f"{where}: must be at least {key.lo:g}; got {value!r}")
        if key.hi is not None and value > key.hi:
            raise ConfigError(f"{where}: must be at most {key.hi:g}; got {value!r}")
    if isinstance(value, list):
        if key.length and not (key.length[0] <= len(value) <= key.length[1]):
            raise ConfigError(
                f"{where}: needs {key.length[0]} to {key.length[1]} entries; got {len(value)}"
            )
        for i, item in enumerate(value):
            if key.item is not None and (
                not isinstance(item, key.item) or isinstance(item, bool)
            ):
                raise ConfigError(f"{where}[{i}]: expected {_type_name(key.item)}, got {item!r}")
    return value


def _check_section(name: str, doc: dict[str, Any]) -> dict[str, Any]:
    spec = SCHEMA[name]
    if not isinstance(doc, dict):
        raise ConfigError(f"{name}: expected a [{name}] table")
    for k in doc:
        if k not in spec:
            raise ConfigError(f"{name}.{k}: unknown key (known: {', '.join(spec)})")
    # A disabled device needs none of its required keys.
    disabled = doc.get("enabled") is False
    out: dict[str, Any] = {}
    for k, key in spec.items():
        if k in doc:
            out[k] = _check_value(f"{name}.{k}", key, doc[k])
        elif key.required and not disabled:
            raise ConfigError(f"{name}.{k}: missing (required)")
        else:
            out[k] = None if key.required else key.default
    return out


def _cross_checks(cfg: dict[str, dict[str, Any]]) -> None:
    eeg = cfg["eeg"]
    cyton = eeg["backend"] in CYTON_BACKENDS
    if eeg["enabled"] and cyton:
        _cyton_checks(eeg)
    elif eeg["enabled"]:
        link = cfg["sim"]["eeg_link"] if eeg["backend"] == "sim" else eeg["backend"]
        n_ch = len(eeg["channels"])
        gains = eeg["gain"] if isinstance(eeg["gain"], list) else [eeg["gain"]] * n_ch
        if len(gains) != n_ch or any(g not in ADS1299_GAINS for g in gains):
            opts = ", ".join(str(g) for g in ADS1299_GAINS)
            raise ConfigError(f"eeg.gain: one value or one per channel ({n_ch}), each one of "
                              f"{opts}; got {eeg['gain']!r}")
        if link in ("spi", "spidev"):
            if eeg["drdy_line"] < 0:
                raise ConfigError("eeg.drdy_line: missing (required for direct SPI)")
            n_chips = len(eeg["spi_devices"])
            if n_ch != 8 * n_chips:
                raise ConfigError(
                    f"eeg.channels: {n_chips} chip(s) on spi_devices need {8 * n_chips} "
                    f"channel names; got {n_ch} (more channels: eeg.backend = \"bridge\")"
                )
        elif n_ch % 8:
            raise ConfigError(f"eeg.channels: 8 names per chip behind the bridge; got {n_ch}")
        if len(set(eeg["channels"])) != n_ch:
            raise ConfigError("eeg.channels: channel names must be unique")
    if eeg["enabled"]:
        unknown = [c for c in cfg["features"]["eeg_channels"] if c not in eeg["channels"]]
        if unknown:
            raise ConfigError(f"features.eeg_channels: {unknown} not in eeg.channels")
    gpio = cfg["gpio"]
    used = [gpio["sync_out_line"], gpio["marker_strobe_line"], *gpio["marker_data_lines"]]
    if eeg["enabled"] and not cyton and eeg["drdy_line"] >= 0:
        used.append(eeg["drdy_line"])
    dup = {x for x in used if used.count(x) > 1}
    if dup:
        raise ConfigError(f"gpio: line(s) {sorted(dup)} assigned twice")


def _cyton_checks(eeg: dict[str, Any]) -> None:
    n = len(eeg["channels"])
    if n not in (8, 16):
        raise ConfigError(f"eeg.channels: a Cyton has 8 channels, 16 with the Daisy; got {n}")
    if not isinstance(eeg["gain"], int) or eeg["gain"] not in ADS1299_GAINS:
        opts = ", ".join(str(g) for g in ADS1299_GAINS)
        raise ConfigError(f"eeg.gain: the Cyton takes one gain, one of {opts}; "
                          f"got {eeg['gain']!r}")
    if len(set(eeg["channels"])) != n:
        raise ConfigError("eeg.channels: channel names must be unique")
    need = eeg["fs_hz"] * CYTON_PACKET_BITS
    if need > eeg["baud"]:
        raise ConfigError(f"eeg.fs_hz: {eeg['fs_hz']} packets/s of 33 bytes need {need} baud; "
                          f"eeg.baud is {eeg['baud']} (the dongle streams 250 Hz at 115200)")


def parse(doc: dict[str, Any], source: str = "") -> RigConfig:
    for section in doc:
        if section not in SCHEMA:
            raise ConfigError(f"{section}: unknown section (known: {', '.join(SCHEMA)})")
    for section in SCHEMA:
        if section not in doc and section not in OPTIONAL_SECTIONS:
            raise ConfigError(f"{section}: missing section [{section}]")
    cfg = {name: _check_section(name, doc.get(name, {})) for name in SCHEMA}
    _cross_checks(cfg)
    return RigConfig(**cfg, source=source)


def load(path: str | Path) -> RigConfig:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    return parse(doc, source=str(p))


def example_path(name: str) -> Path:
    """A shipped example config: ``sim``, ``sim-cyton`` or ``pi``."""
    return Path(str(resources.files("edge") / "configs" / f"{name}.toml"))
