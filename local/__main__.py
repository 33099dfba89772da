"""``python -m local [--port N] [--template PATH]``: serve template.yaml's API on 127.0.0.1."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from types import FrameType

from local.parameters import ParameterError
from local.stack import REPO_ROOT, LocalStack, log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    parser.add_argument("--template", type=Path, default=REPO_ROOT / "template.yaml")
    parser.add_argument(
        "--parameter-overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="template parameters, as sam deploy takes them (e.g. TrialDuration=PT30S)",
    )
    args = parser.parse_args(argv)
    overrides: dict[str, str] = {}
    for pair in args.parameter_overrides:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            parser.error(f"--parameter-overrides wants KEY=VALUE, not {pair!r}")
        overrides[key] = value

    stopping = threading.Event()
    started = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if not started:
            raise KeyboardInterrupt  # interrupt a start in progress; stop() below cleans up

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    stack = LocalStack(args.port, args.template.resolve(), overrides)
    try:
        stack.start()
        started = True
    except KeyboardInterrupt:
        log("interrupted while starting")
        stack.stop()
        return 0
    except ParameterError as error:  # the developer's to fix: the message says it all
        log(f"startup failed: {error}")
        stack.stop()
        return 1
    except Exception as error:
        traceback.print_exc()
        log(f"startup failed: {error}")
        stack.stop()
        return 1
    print(stack.banner(), flush=True)
    while not stopping.wait(1.0):  # the wait wakes up early on a signal
        pass
    log("stopping")
    stack.stop()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
