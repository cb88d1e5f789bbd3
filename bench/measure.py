"""Run one command and report its wall time and peak RSS, for bench/run.py.

    python3 -I -S bench/measure.py RESULT.json COMMAND [ARG ...]

Why a separate process: on Linux a child's ru_maxrss starts from the RSS
high-water mark of the process it was forked (or vforked) from, so wait4 in
the harness itself would report max(harness peak, command peak). This small
interpreter forks the command, so the floor is its own RSS (about 8 MiB);
bench/run.py measures that floor with `true` and reports it.

Writes {"wall_s", "maxrss_kib", "cpu_s" (user + sys), "exit_code"} to RESULT.json; stdin, stdout,
stderr and the environment are passed through to the command.
"""

import json
import os
import sys
import time


def main() -> None:
    result, argv = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    with open(result, "w") as f:
        # ru_maxrss is in KiB on Linux.
        json.dump({"wall_s": wall, "maxrss_kib": usage.ru_maxrss,
                   "cpu_s": usage.ru_utime + usage.ru_stime,
                   "exit_code": os.waitstatus_to_exitcode(status)}, f)


if __name__ == "__main__":
    main()
