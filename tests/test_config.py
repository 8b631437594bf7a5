"""The rig config: shipped examples load; every mistake is one line naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge import config

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def _sim_doc() -> dict:
    with open(config.example_path("sim"), "rb") as f:
        return tomllib.load(f)


@pytest.mark.parametrize(("name", "n_channels"), [("sim", 8), ("sim-vga", 8), ("pi", 8),
                                                 ("sim-64", 64)])
def test_shipped_examples_validate(name: str, n_channels: int) -> None:
    cfg = config.load(config.example_path(name))
    assert cfg.rig["id"]
    assert len(cfg.eeg["channels"]) == n_channels
    assert config.eeg_link(cfg) == "bridge"  # every shipped rig has the EEG bridge


@pytest.mark.parametrize(("backend", "link"), [("spi", "spi"), ("spidev", "spi"),
                                               ("bridge", "bridge")])
def test_sim_keeps_the_configs_eeg_front_end(backend: str, link: str) -> None:
    doc = _sim_doc()
    doc["eeg"]["backend"] = backend
    cfg = config.parse(doc).with_all_simulated()
    assert cfg.eeg["backend"] == "sim" and config.eeg_link(cfg) == link


def test_per_channel_gains_and_feature_channels() -> None:
    doc = _sim_doc()
    doc["eeg"]["gain"] = [1, 2, 4, 6, 8, 12, 24, 24]
    doc["features"] = {"eeg_channels": ["O1", "O2"]}
    cfg = config.parse(doc)
    assert cfg.eeg["gain"] == [1, 2, 4, 6, 8, 12, 24, 24]
    assert cfg.features["eeg_channels"] == ["O1", "O2"]


def test_defaults_fill_optional_keys() -> None:
    doc = _sim_doc()
    del doc["eeg"]["gain"]
    cfg = config.parse(doc)
    assert cfg.eeg["gain"] == 24


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("eeg", "fs_hz", 300, "eeg.fs_hz: must be one of 250, 500, 1000"),
        ("eeg", "gain", "24", "eeg.gain: expected an integer"),
        ("hub", "baud", True, "hub.baud: expected an integer"),
        ("camera", "fps", 0, "camera.fps: must be at least 1"),
        ("eeg", "channels", ["Fp1"] * 8, "eeg.channels: channel names must be unique"),
        ("eeg", "channels", ["a"] * 3, "eeg.channels: needs 8 to 64 entries"),
        ("eeg", "channels", [f"E{i}" for i in range(12)], "eeg.channels: 8 names per chip"),
        ("eeg", "gain", 5, "eeg.gain: one value or one per channel (8)"),
        ("eeg", "gain", [24] * 7, "eeg.gain: needs 8 to 64 entries"),
        ("eeg", "gain", [24] * 9, "eeg.gain: one value or one per channel (8)"),
        ("features", "eeg_channels", ["Cz"], "features.eeg_channels: ['Cz'] not in"),
        ("sim", "eeg_link", "usb", "sim.eeg_link: must be one of bridge, spi"),
        ("gpio", "marker_data_lines", [5, "x"], "gpio.marker_data_lines[1]: expected an integer"),
        ("eeg", "fs_hzz", 1000, "eeg.fs_hzz: unknown key"),
    ],
)
def test_bad_values_name_the_key(section: str, key: str, value: object, message: str) -> None:
    doc = _sim_doc()
    doc[section][key] = value
    with pytest.raises(config.ConfigError) as err:
        config.parse(doc)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_missing_required_key_is_named() -> None:
    doc = _sim_doc()
    del doc["rig"]["id"]
    with pytest.raises(config.ConfigError, match=r"^rig\.id: missing"):
        config.parse(doc)


def test_disabled_device_needs_no_required_keys() -> None:
    doc = _sim_doc()
    doc["eeg"] = {"enabled": False}
    cfg = config.parse(doc)
    assert cfg.eeg["enabled"] is False


def test_two_chips_on_direct_spi_need_sixteen_channel_names() -> None:
    doc = _sim_doc()
    doc["sim"]["eeg_link"] = "spi"
    doc["eeg"]["spi_devices"] = [0, 1]
    with pytest.raises(config.ConfigError, match=r"2 chip\(s\) on spi_devices need 16 channel"):
        config.parse(doc)


def test_gpio_line_used_twice_is_refused() -> None:
    doc = _sim_doc()
    doc["eeg"]["drdy_line"] = doc["gpio"]["sync_out_line"]
    with pytest.raises(config.ConfigError, match="assigned twice"):
        config.parse(doc)


def test_digest_changes_with_content() -> None:
    a = config.parse(_sim_doc())
    doc = _sim_doc()
    doc["rig"]["id"] = "other"
    assert a.digest() != config.parse(doc).digest()


def test_cli_reports_bad_config_in_one_line_with_status_2(tmp_path) -> None:
    bad = tmp_path / "rig.toml"
    bad.write_text(config.example_path("sim").read_text().replace("fs_hz = 1000", "fs_hz = 7", 1))
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(bad), "--duration", "1"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "mmme-edge: config error: eeg.fs_hz: must be one of 250, 500, 1000, 2000, 4000, "
        "8000, 16000; got 7"
    ]


def test_cli_reports_unparseable_toml(tmp_path) -> None:
    bad = tmp_path / "rig.toml"
    bad.write_text("[rig\nid=")
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(bad)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "not valid TOML" in proc.stderr and "Traceback" not in proc.stderr


def test_direct_spi_beyond_two_chips_points_to_the_bridge() -> None:
    doc = _sim_doc()
    doc["eeg"]["backend"] = "spi"
    doc["eeg"]["channels"] = [f"E{i}" for i in range(24)]
    with pytest.raises(config.ConfigError, match=r"^eeg\.channels: 1 chip.*eeg\.backend"):
        config.parse(doc)
    doc["eeg"]["backend"] = "bridge"
    assert len(config.parse(doc).eeg["channels"]) == 24


def _cyton_doc() -> dict:
    with open(config.example_path("sim-cyton"), "rb") as f:
        return tomllib.load(f)


def test_the_cyton_example_validates_and_sim_keeps_it_a_cyton() -> None:
    cfg = config.load(config.example_path("sim-cyton"))
    assert cfg.eeg["backend"] == "sim-cyton" and len(cfg.eeg["channels"]) == 16
    doc = _cyton_doc()
    doc["eeg"]["backend"] = "cyton"
    real = config.parse(doc)
    assert real.with_all_simulated().eeg["backend"] == "sim-cyton"
    assert config.parse(_sim_doc()).with_all_simulated().eeg["backend"] == "sim"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("channels", [f"E{i}" for i in range(12)], "eeg.channels: a Cyton has 8 channels, 16 "
                                                   "with the Daisy; got 12"),
        ("fs_hz", 1000, "eeg.fs_hz: 1000 packets/s of 33 bytes need 330000 baud; eeg.baud is "
                        "115200"),
    ],
)
def test_what_a_cyton_link_cannot_carry_is_refused(key: str, value: object, message: str) -> None:
    doc = _cyton_doc()
    doc["eeg"][key] = value
    with pytest.raises(config.ConfigError) as err:
        config.parse(doc)
    assert str(err.value).startswith(message)


def test_direct_mode_needs_its_drdy_line_and_the_bridge_and_a_cyton_do_not() -> None:
    doc = _sim_doc()
    doc["sim"]["eeg_link"] = "spi"
    del doc["eeg"]["drdy_line"]
    with pytest.raises(config.ConfigError, match=r"^eeg\.drdy_line: missing \(required for "
                                                 r"direct SPI\)"):
        config.parse(doc)
    doc["eeg"]["backend"] = "spi"
    with pytest.raises(config.ConfigError, match="direct SPI"):
        config.parse(doc)
    doc["eeg"]["backend"] = "bridge"
    assert config.parse(doc).eeg["drdy_line"] == -1
    assert "drdy_line" not in _cyton_doc()["eeg"]
    assert config.parse(_cyton_doc()).eeg["drdy_line"] == -1
