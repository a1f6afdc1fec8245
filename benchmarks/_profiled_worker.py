"""`sessionwatch worker` under cProfile, for the throughput benchmark's worker profile.

`python -m benchmarks._profiled_worker PSTATS_OUT worker --app-id ... --partitions 1`

Profiles the event-loop (main) thread for the life of the process; the parent stops it with
SIGTERM (faust shuts down gracefully) and the stats are dumped at exit. The number of events it
processed is the call count of SessionPipeline.process in the stats.
"""

from __future__ import annotations

import atexit
import cProfile
import sys


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    profiler = cProfile.Profile()

    def dump() -> None:
        profiler.disable()
        profiler.dump_stats(out)

    atexit.register(dump)
    profiler.enable()
    from sessionwatch.cli import main as cli_main

    code = cli_main(args)
    dump()
    atexit.unregister(dump)
    sys.exit(code)


if __name__ == "__main__":
    main()
