#!/usr/bin/env bash
# Before/after, side by side: two agent binaries alternating, ROUNDS rounds,
# against one emulator. Each round, for each binary: a first sync of noop20k
# into a fresh state, a no-op restart on that state, and a sync of bulk20k
# into a fresh state. Prints the median wall time, CPU and peak RSS of each.
# Sequential runs of `run.py --rev` are exposed to the machine's load changing
# between them; alternating is not.
#
#   python3 bench/run.py --prepare noop20k bulk20k       # the corpora, once
#   python3 bench/run.py bulk500 --runs 1 --rev ad202e0  # builds that revision (bench/out/target) and an emulator (bench/out/bin)
#   cp bench/out/target/release/tanova-sync /tmp/before
#   cargo build --release -p tanova-sync && cp target/release/tanova-sync /tmp/after
#   bench/paired.sh /tmp/before /tmp/after 5
set -euo pipefail

before=$(realpath "$1") after=$(realpath "$2") rounds=${3:-5}
out=$(cd "$(dirname "$0")" && pwd)/out
emulator=$out/bin/tanova-emulator
for need in "$emulator" "$out/corpora/noop20k" "$out/corpora/bulk20k"; do
    [ -e "$need" ] || { echo "missing $need: see the comment at the top of $0" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'kill "$emu" 2>/dev/null; rm -rf "$work"' EXIT

"$emulator" --listen 127.0.0.1:0 --upload-latency-ms 0 --capacity 0 >"$work/emulator.log" 2>&1 &
emu=$!
for _ in $(seq 50); do grep -q 'http://127.0.0.1:[0-9]*' "$work/emulator.log" && break; sleep 0.1; done
url=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/emulator.log" | head -1)

# run LABEL CORPUS BINARY fresh|keep: one sync, one line "LABEL BINARY wall user sys maxrss_kib".
run() {
    if [ "$4" = fresh ]; then
        rm -rf "$work/state" && mkdir "$work/state"
        curl -fsS -X POST "$url/_emulator/reset" >/dev/null
    fi
    TANOVA_FOLDER_PATH="$out/corpora/$2" TANOVA_API_KEY=tanova_sk_emulator_0000000000000000 TANOVA_URL="$url" \
        /usr/bin/time -f "$1 $3 %e %U %S %M" -o "$work/time" \
        "$3" sync --json -q --state-dir "$work/state" >"$work/summary.json" 2>"$work/stderr" || true
    grep -q '"failed":0' "$work/summary.json" || {
        echo "$1 with $3 failed: $(tail -c 300 "$work/summary.json") $(tail -3 "$work/stderr")" >&2; exit 1; }
    cat "$work/time"
}

for _ in $(seq "$rounds"); do
    for binary in "$before" "$after"; do
        run first-sync-20k noop20k "$binary" fresh
        run noop-restart-20k noop20k "$binary" keep
        run sync-bulk20k bulk20k "$binary" fresh
    done
done >"$work/samples"

python3 - "$work/samples" "$before" "$after" <<'EOF'
import collections, statistics, sys
samples = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, binary, wall, user, system, rss = line.split()
    samples[label, binary].append((float(wall), float(user) + float(system), int(rss) / 1024))
print(f"{'scenario':18} {'binary':8} {'wall s':>7} {'CPU s':>7} {'RSS MiB':>8}  walls")
for label in ("first-sync-20k", "noop-restart-20k", "sync-bulk20k"):
    for name, binary in (("before", sys.argv[2]), ("after", sys.argv[3])):
        runs = samples[label, binary]
        median = lambda i: statistics.median(r[i] for r in runs)
        print(f"{label:18} {name:8} {median(0):7.3f} {median(1):7.2f} {median(2):8.1f}  {' '.join(f'{r[0]:.2f}' for r in runs)}")
EOF
