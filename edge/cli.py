"""``mmme-edge``: run the rig, check its devices, inspect and export recordings.

    mmme-edge run [--config FILE] [--sim] [--duration S] [--json]
    mmme-edge run --replay REC.mcap | --replay hub=PATH [--channel-map ppg=PLETH,ecg=II]
    mmme-edge selftest [--config FILE] [--sim]
    mmme-edge info REC
    mmme-edge export REC --out DIR
    mmme-edge import-mmme SESSION_DIR --out REC
    mmme-edge dashboard [--port P] [--broker ws://HOST:9001]

A bad config or command line is one line on stderr and exit status 2; a device that
fails to open is one line and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from edge import config
from sensors.errors import DeviceError

EXIT_USAGE = 2
EXIT_DEVICE = 1
RUN_WAKE_CHECK_S = 1.0  # the start-up check when no selftest verdict of this boot exists


def warn_if_direct_mode_cannot_hold(cfg: config.RigConfig) -> None:
    """Direct mode: say at start, on stderr, when this host cannot hold the EEG rate.

    The verdict is the last ``selftest``'s where there is one (this boot, this rate: 5 s
    idle and 2 s beside the running rig), else a 1-s measurement now on the still idle
    host: at 1 kHz 1000 deadlines, enough to catch a host that misses one in a few
    hundred, for 1.2 s of start-up. That one cannot see the rig's own load: a host that
    holds the rate idle and not beside the rig is caught by ``selftest``, not here.
    """
    from edge import wakeup
    from edge.selftest import direct_mode

    if not direct_mode(cfg):
        return
    from edge.rig import EEG_RT_PRIORITY

    fs = float(cfg.eeg["fs_hz"])
    floor = wakeup.load(fs)
    source = "selftest of this boot"
    if floor is None:
        floor = wakeup.check(fs, RUN_WAKE_CHECK_S, EEG_RT_PRIORITY)
        source = f"{RUN_WAKE_CHECK_S:g}-s check at start"
    if not floor.holds:
        print(f"mmme-edge: warning: {floor.sentence()} [{source}]; an EEG backend that "
              f"buffers in hardware (cyton, the bridge) does not depend on it",
              file=sys.stderr, flush=True)


def _load_config(args: argparse.Namespace) -> config.RigConfig:
    replaying = bool(getattr(args, "replay", None) or getattr(args, "channel_map", None))
    path = args.config or config.example_path("sim" if args.sim or replaying else "pi")
    cfg = config.load(path)
    if replaying:
        from hil.sim.playback import ReplayError, parse_channel_map, parse_replay_args

        try:
            extra: dict = parse_replay_args(args.replay or [])
            if args.channel_map:
                extra["channel_map"] = parse_channel_map(args.channel_map)
        except ReplayError as exc:
            raise config.ConfigError(f"replay: {exc}") from None
        for key, value in (("start_s", args.replay_start), ("span_s", args.replay_span)):
            if value is not None:
                extra[key] = float(value)
        cfg = cfg.with_replay(**extra)
        if not any(cfg.replay[k] for k in ("recording", "hub", "eeg", "camera")):
            raise config.ConfigError("replay: --channel-map needs something to replay "
                                     "(--replay REC or --replay hub=PATH)")
        return cfg
    return cfg.with_all_simulated() if args.sim else cfg


def _replay_duration(cfg: config.RigConfig, duration_s: float, quiet: bool) -> float:
    """Read what ``[replay]`` names (errors before any device opens); with no duration
    given, run until the replay has played out."""
    from hil.sim.playback import ReplayError, plan_replay

    try:
        plan = plan_replay(cfg)
    except ReplayError as exc:
        raise config.ConfigError(f"replay: {exc}") from None
    if plan is None:
        return duration_s
    if not quiet:
        print(f"replay: {json.dumps(plan.summary())}", file=sys.stderr)
    return duration_s if duration_s > 0 else plan.run_s


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmme-edge", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the rig (acquire, record, process, publish)")
    run.add_argument("--config", help="rig TOML (default: the shipped example)")
    run.add_argument("--sim", action="store_true", help="every device on the simulated bench")
    run.add_argument("--duration", type=float, default=0.0, help="seconds; 0 runs until stopped")
    run.add_argument("--json", action="store_true", help="end with one JSON summary line")
    run.add_argument("--quiet", action="store_true", help="no live status lines")
    run.add_argument("--record-dir", help="override rig.data_dir")
    run.add_argument("--ground-truth", metavar="FILE",
                     help="simulated rig: write the scenario's ground truth (host ns) here")
    run.add_argument("--replay", action="append", metavar="REC|STREAM=PATH",
                     help="on the simulated bench, play a rig recording (every stream it "
                          "has) or one stream: hub=PATH (WFDB, EDF/BDF, CSV, .mcap), "
                          "eeg=PATH, camera=REC.mcap; repeatable; implies --sim")
    run.add_argument("--channel-map", metavar="RIG=SRC,...",
                     help="hub channels from source channels, e.g. ppg=PLETH,ecg=II")
    run.add_argument("--replay-start", type=float, metavar="S",
                     help="start this many seconds into the replayed source")
    run.add_argument("--replay-span", type=float, metavar="S",
                     help="replay this many seconds (default: to the end)")

    st = sub.add_parser("selftest", help="check every configured device, pass/fail each")
    st.add_argument("--config")
    st.add_argument("--sim", action="store_true")
    st.add_argument("--json", action="store_true")

    for name, helptext in (("info", "print a recording's streams"), ("export", "export to BDF+"),
                           ("import-mmme", "import an MMME corpus session as a recording"),
                           ("dashboard", "serve the live dashboard page")):
        sp = sub.add_parser(name, help=helptext, add_help=False)
        sp.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    entries = {"info": ("edge.recording.info", "info_main"),
               "export": ("edge.recording.export", "export_main"),
               "import-mmme": ("edge.corpus.mmme_import", "main"),
               "dashboard": ("edge.dashboard", "main")}
    if argv and argv[0] in entries:
        module, func = entries[argv[0]]
        return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        cfg = _load_config(args)
        if args.command == "run":
            duration = _replay_duration(cfg, args.duration, args.quiet)
    except config.ConfigError as exc:
        print(f"mmme-edge: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    try:
        if args.command == "run":
            from edge import malloc
            from edge.runtime import run

            note = malloc.tune()  # before the first thread: arenas are per thread
            if not args.quiet:
                print(note, file=sys.stderr)
            warn_if_direct_mode_cannot_hold(cfg)

            return run(cfg, duration_s=duration, as_json=args.json, quiet=args.quiet,
                       record_dir=args.record_dir, ground_truth=args.ground_truth)
        if args.command == "selftest":
            from edge.selftest import selftest

            return selftest(cfg, as_json=args.json)
    except DeviceError as exc:
        print(f"mmme-edge: device error: {exc}", file=sys.stderr)
        return EXIT_DEVICE
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
