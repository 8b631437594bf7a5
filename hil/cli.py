"""``mmme-hil``: the hardware-in-the-loop bench.

    mmme-hil bench NAME [args]   runs hil.benchmarks.NAME.main(args)
    mmme-hil run SCENARIO        the end-to-end scenario (hil.e2e)
"""

from __future__ import annotations

import importlib
import sys

from hil.benchmarks import REGISTRY

BENCHES = (*REGISTRY, "all")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("benches: " + ", ".join(BENCHES))
        return 0 if args else 2
    if args[0] == "bench":
        if len(args) < 2 or args[1] not in BENCHES:
            print(f"mmme-hil: bench needs one of: {', '.join(BENCHES)}", file=sys.stderr)
            return 2
        module = f"hil.benchmarks.{args[1]}"
        args = args[2:]
    elif args[0] == "run":
        module, args = "hil.e2e", args[1:]
    else:
        print(f"mmme-hil: unknown command {args[0]!r}", file=sys.stderr)
        return 2
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            print(f"mmme-hil: {module} is not built yet", file=sys.stderr)
            return 2
        raise
    return int(mod.main(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
