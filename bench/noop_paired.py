#!/usr/bin/env python3
"""No-op restarts of several agent binaries and `find`, alternating (stdlib only).

    python3 bench/noop_paired.py CORPUS ROUNDS AGENT...

    python3 bench/run.py --prepare noop20k
    python3 bench/noop_paired.py bench/out/corpora/noop20k 15 /tmp/before /tmp/after

Starts bench/out/bin/tanova-emulator, syncs CORPUS once into a fresh state with
the first agent, then runs each agent's no-op restart on that state and
`find CORPUS -printf '%s %T@'` in turn, ROUNDS times, and prints the median
wall time of each and its ratio to find's. Finer than bench/paired.sh, whose
`/usr/bin/time` resolves 10 ms: a no-op restart of 20k files takes about 80.
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
API_KEY = "tanova_sk_emulator_0000000000000000"


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    corpus, rounds, agents = Path(sys.argv[1]).resolve(), int(sys.argv[2]), sys.argv[3:]
    emulator = OUT / "bin" / "tanova-emulator"
    for need in (corpus, emulator, *map(Path, agents)):
        if not need.exists():
            print(f"missing {need}: see the comment at the top of {sys.argv[0]}", file=sys.stderr)
            return 1
    emu = subprocess.Popen([str(emulator), "--listen", "127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        while url is None:
            line = emu.stdout.readline()
            if not line:
                print("the emulator did not start", file=sys.stderr)
                return 1
            found = re.search(r"http://127\.0\.0\.1:\d+", line)
            url = found and found.group(0)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TANOVA_")}
        env.update(TANOVA_FOLDER_PATH=str(corpus), TANOVA_API_KEY=API_KEY, TANOVA_URL=url)
        with tempfile.TemporaryDirectory() as state:
            sync = lambda agent: [agent, "sync", "-q", "--json", "--state-dir", state]
            first = subprocess.run(sync(agents[0]), env=env, stdout=subprocess.PIPE, text=True)
            if '"failed":0' not in first.stdout.replace(" ", ""):
                print(f"the first sync failed: {first.stdout[-300:]}", file=sys.stderr)
                return 1
            commands = {agent: sync(agent) for agent in agents}
            commands["find"] = ["find", str(corpus), "-printf", "%s %T@\n"]
            walls = {name: [] for name in commands}
            for _ in range(rounds):
                for name, argv in commands.items():
                    started = time.perf_counter()
                    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
                    walls[name].append(time.perf_counter() - started)
    finally:
        emu.kill()
    find = statistics.median(walls["find"])
    for name, samples in walls.items():
        median = statistics.median(samples)
        print(f"{name:30} {median * 1000:9.1f} ms  {median / find:5.2f}× find  "
              f"({min(samples) * 1000:.1f}–{max(samples) * 1000:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
