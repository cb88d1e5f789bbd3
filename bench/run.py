#!/usr/bin/env python3
"""Benchmark harness for tanova-sync (stdlib only).

    python3 bench/run.py [SCENARIO ...] [--runs N] [--rev REV]   # no SCENARIO: all but the soaks
    python3 bench/run.py soak [--minutes N]                       # the long watch under churn and faults
    python3 bench/run.py --prepare [SCENARIO ...]                 # only generate the corpora
    python3 bench/run.py --report [SCENARIO ...]                  # the latest results as Markdown

Builds the release binaries (from the working tree, or with --rev the agent
from a clean export of that git revision, always against the working tree's
emulator), generates deterministic corpora under bench/out/
(reused when already generated with the same parameters), runs each scenario
against a local tanova-emulator, checks every run for correctness (a run that
uploads the wrong thing fails the benchmark instead of reporting a time),
prints a table of medians and writes bench/out/results.json (this invocation)
and bench/out/results/SCENARIO.json (the latest run of each scenario; with
--rev, SCENARIO@REV.json).

Scenarios (see BENCHMARKS.md for what each measures and why):
  bulk500        issue 4: 500 CVs, 300 ms uploads, capacity 32, default (adaptive) concurrency
  bulk500-cap8   issue 4: the same 500 CVs, capacity 8
  bulk2000-cap128  issue 4: 2,000 CVs, capacity 128, --max-workers 256
  bulk20k        issue 4: 20,000 CVs (2.4 GB) at zero latency, against openssl hashing them
  migrate20k     issue 12: first start with all 20,000 CVs of bulk20k in the script's sync_history.json,
                 against openssl hashing them
  noop20k        issue 4: no-op restart over 20,000 files, against a find stat walk
  noop1m         issue 4: the same over 1,000,000 files (first sync included in the setup)
  first20k       issue 12: first sync of the 20,000 small files of noop20k into a fresh state, zero latency
  first1m        issue 12: the same over the 1,000,000 files of noop1m (minutes a run; only when named)
  build          issue 12: cold `cargo build --release` time and binary size (only when named)
  watch-latency  issue 3: close-to-receipt latency of 100 files written one at a time
  watch-burst    issue 3: 1,000 files copied into a watched folder, capacity 32
  ledger         issue 6: 2,000-file sync with the Redis ledger against SQLite
  soak           issue 10: watch for --minutes (default 10) under churn, key revocations and an outage;
                 RSS, fds, threads, CPU every 5 s; no file lost, no duplicate (only when named)
  soak-ledger    issue 10: the same with the Redis ledger and a redis-server restart (only when named)

Add a scenario by writing a function `scenario(ctx) -> list[Row]` and
registering it in SCENARIOS.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
CORPORA = OUT / "corpora"
STATE = OUT / "state"
LOGS = OUT / "logs"
RESULTS = OUT / "results"
MEASURE = Path(__file__).resolve().parent / "measure.py"
API_KEY = "tanova_sk_emulator_0000000000000000"
DEFAULT_WORKERS = 5
# Bump when the corpus generator changes, so old corpora are regenerated.
GENERATOR_VERSION = 1


class BenchError(Exception):
    """A run misbehaved: wrong counts, an error exit, a dead emulator."""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Binaries


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def build(rev: str | None) -> tuple[Path, Path, str, Path]:
    """Build the release binaries, from the working tree or, for the agent, from
    a git revision (exported under bench/out/src/, built in bench/out/target/ so
    the shared target/ is not touched), and copy them to bench/out/bin/ so that
    another build replacing them mid-run cannot mix versions. The emulator is
    always the working tree's: it is the measuring instrument, and a revision
    measured against an older one would be timed by a different server (before
    c05a55f, "zero latency" still waited for tokio's next millisecond tick).
    Returns (agent, emulator, label, source directory)."""
    cmd = ["cargo", "build", "--release", "-p", "tanova-sync", "-p", "tanova-emulator"]
    emulator_release = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
    if rev:
        log("building the emulator (working tree)…")
        if subprocess.run(["cargo", "build", "--release", "-p", "tanova-emulator"], cwd=ROOT).returncode != 0:
            raise BenchError(f"cargo build of the emulator failed in {ROOT}")
        cmd = ["cargo", "build", "--release", "-p", "tanova-sync"]
        sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
        src = OUT / "src" / sha[:12]
        if not (src / "Cargo.toml").is_file():
            src.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(["git", "archive", "--format=tar", sha], cwd=ROOT, capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        cwd, env, label = src, {**os.environ, "CARGO_TARGET_DIR": str(OUT / "target")}, sha[:12]
        release = OUT / "target" / "release"
    else:
        cwd, env = ROOT, dict(os.environ)
        release = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
        dirty = bool(git("status", "--porcelain", "--", "crates", "Cargo.toml", "Cargo.lock"))
        label = git("rev-parse", "--short=12", "HEAD") + (" + uncommitted changes" if dirty else "")
    log(f"building release binaries ({label})…")
    if subprocess.run(cmd, cwd=cwd, env=env).returncode != 0:
        raise BenchError(f"cargo build failed in {cwd}")
    bindir = OUT / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    copies = []
    for name, built_in in (("tanova-sync", release), ("tanova-emulator", emulator_release)):
        if not (built_in / name).is_file():
            raise BenchError(f"missing binary after build: {built_in / name}")
        tmp = bindir / f".{name}.tmp"
        shutil.copy2(built_in / name, tmp)
        os.replace(tmp, bindir / name)  # a rename works even while an old copy is running
        copies.append(bindir / name)
    return copies[0], copies[1], label, Path(cwd)


# --------------------------------------------------------------------------
# Corpora: deterministic, generated once per parameter set.

WORDS = (
    "experience engineer senior project team lead python rust sql cloud data "
    "analysis management sales customer product design delivered improved "
    "reduced costs revenue university degree bachelor master skills languages "
    "english french german references available request london manchester "
    "berlin paris 2015 2018 2021 2023 agile scrum stakeholder budget hiring "
    "mentored platform migration kubernetes reporting forecasting negotiation"
).split()
FIRST = "anna ben chloe david emma farid grace hugo isla jamal kofi lena maya noah omar priya quinn rosa sven tara".split()
LAST = "smith jones patel nguyen garcia muller rossi kowalski silva okafor tanaka dubois ivanova costa lee".split()
ROLES = ["Backend Engineer", "Data Scientist", "Sales Manager", "Product Designer", "CVs", "Finance Analyst"]
EXTENSIONS = ["pdf", "docx", "txt", "md"]


def text_bytes(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += (" ".join(rng.choices(WORDS, k=200)) + "\n").encode()
    return bytes(out[:size])


def file_body(rng: random.Random, ext: str, header: str, size: int) -> bytes:
    """Plausible-looking bytes of about `size`; `header` makes each file distinct."""
    head = header.encode()
    rest = max(size - len(head) - 16, 0)
    if ext == "pdf":
        return b"%PDF-1.4\n%" + head + b"\n" + rng.randbytes(rest)
    if ext == "docx":
        return b"PK\x03\x04" + head + b"\n" + rng.randbytes(rest)
    return head + b"\n" + text_bytes(rng, rest)


def cv_name(rng: random.Random, i: int, ext: str) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    if i % 3 == 0:  # some names carry an email, as the agent parses them
        return f"{first}_{last}_{i:05d}_{first}.{last}{i}@example.com.{ext}"
    return f"{first}_{last}_{i:05d}.{ext}"


def gen_bulk(root: Path, p: dict) -> None:
    rng = random.Random(p["seed"])
    for i in range(p["files"]):
        ext = EXTENSIONS[i % len(EXTENSIONS)]
        folder = root / ROLES[i % len(ROLES)]
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(p["min_bytes"], p["max_bytes"])
        body = file_body(rng, ext, f"bench {p['seed']} cv {i}", size)
        (folder / cv_name(rng, i, ext)).write_bytes(body)


def gen_tree(root: Path, p: dict) -> None:
    rng = random.Random(p["seed"])
    leaves = [
        root / f"{ROLES[a % len(ROLES)]} {a:02d}" / f"batch-{b:03d}"
        for a in range(p["top_dirs"])
        for b in range(p["sub_dirs"])
    ]
    for leaf in leaves:
        leaf.mkdir(parents=True, exist_ok=True)
    for i in range(p["files"]):
        ext = EXTENSIONS[i % len(EXTENSIONS)]
        size = rng.randint(p["min_bytes"], p["max_bytes"])
        body = file_body(rng, ext, f"bench {p['seed']} cv {i}", size)
        (leaves[i % len(leaves)] / cv_name(rng, i, ext)).write_bytes(body)
        if i and i % 100_000 == 0:
            log(f"  … {i} files")


GENERATORS = {"bulk": gen_bulk, "tree": gen_tree}

# name -> (generator, parameters). `bulk`: files spread over six role folders;
# `tree`: top_dirs × sub_dirs leaf folders.
CORPUS_SPECS = {
    "bulk500": ("bulk", {"files": 500, "min_bytes": 20_000, "max_bytes": 200_000, "seed": 500}),
    "bulk2000": ("bulk", {"files": 2_000, "min_bytes": 20_000, "max_bytes": 200_000, "seed": 2_000}),
    "burst1000": ("bulk", {"files": 1_000, "min_bytes": 20_000, "max_bytes": 200_000, "seed": 1_000}),
    # 20–220 KB, 120 KB on average: about 2.4 GB.
    "bulk20k": ("bulk", {"files": 20_000, "min_bytes": 20_000, "max_bytes": 220_000, "seed": 20_001}),
    "noop20k": ("tree", {"files": 20_000, "top_dirs": 10, "sub_dirs": 20,
                         "min_bytes": 300, "max_bytes": 4_000, "seed": 20_000}),
    "noop1m": ("tree", {"files": 1_000_000, "top_dirs": 20, "sub_dirs": 50,
                        "min_bytes": 300, "max_bytes": 4_000, "seed": 1_000_000}),
    "ledger2000": ("bulk", {"files": 2_000, "min_bytes": 2_048, "max_bytes": 16_384, "seed": 42}),
}


@dataclass
class Corpus:
    path: Path
    files: int
    bytes: int
    dirs: int


def corpus(name: str) -> Corpus:
    """The corpus directory, generated unless a complete one with these parameters exists."""
    kind, params = CORPUS_SPECS[name]
    root = CORPORA / name
    marker = CORPORA / f"{name}.params.json"  # outside the tree: find and the agent see only CVs
    wanted = {"kind": kind, "generator": GENERATOR_VERSION, **params}
    if marker.is_file() and root.is_dir():
        saved = json.loads(marker.read_text())
        if saved.get("params") == wanted:
            return Corpus(root, saved["files"], saved["bytes"], saved["dirs"])
    marker.unlink(missing_ok=True)
    if root.exists():
        shutil.rmtree(root)
    log(f"generating corpus {name} ({params['files']} files)…")
    started = time.perf_counter()
    GENERATORS[kind](root, params)
    files = total = dirs = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirs += len(dirnames)
        files += len(filenames)
        total += sum(os.stat(os.path.join(dirpath, f)).st_size for f in filenames)
    if files != params["files"]:
        raise BenchError(f"corpus {name}: generated {files} files, wanted {params['files']}")
    marker.write_text(json.dumps({"params": wanted, "files": files, "bytes": total, "dirs": dirs}, indent=1))
    log(f"  done in {time.perf_counter() - started:.1f} s ({total / 1e6:.0f} MB)")
    return Corpus(root, files, total, dirs)


# --------------------------------------------------------------------------
# Processes


@dataclass
class Measured:
    wall_s: float
    maxrss_kib: int
    cpu_s: float
    exit_code: int
    stdout: str


def measure(argv: list, *, env: dict | None = None, cwd: Path | None = None,
            stdout_to: Path | None = None, stderr_to: Path | None = None) -> Measured:
    """Run argv to completion through bench/measure.py: wall time from fork to
    reap, and peak RSS from wait4 (see measure.py for why not wait4 here)."""
    result = LOGS / "measure-result.json"
    result.unlink(missing_ok=True)
    out = open(stdout_to, "w+b") if stdout_to else subprocess.DEVNULL
    err = open(stderr_to, "wb") if stderr_to else subprocess.DEVNULL
    try:
        helper = subprocess.run([sys.executable, "-I", "-S", str(MEASURE), str(result), *map(str, argv)],
                                env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        if helper.returncode != 0 or not result.is_file():
            raise BenchError(f"measuring {argv[0]} failed (helper exit {helper.returncode})")
        text = ""
        if stdout_to:
            out.seek(0)
            text = out.read().decode(errors="replace")
    finally:
        for f in (out, err):
            if f is not subprocess.DEVNULL:
                f.close()
    r = json.loads(result.read_text())
    return Measured(r["wall_s"], r["maxrss_kib"], r["cpu_s"], r["exit_code"], text)


def proc_cpu_s(pid: int) -> float:
    """CPU time (user + sys) a live process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_kib(pid: int) -> int:
    """VmHWM of a live process: its own peak RSS so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class Emulator:
    def __init__(self, binary: Path, log_path: Path, *, latency_ms: int, capacity: int):
        self.args = ["--upload-latency-ms", str(latency_ms), "--capacity", str(capacity)]
        self.binary, self.log = binary, log_path
        self.proc = None
        self.url = ""
        self._conn: http.client.HTTPConnection | None = None

    def __enter__(self) -> "Emulator":
        self.logf = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [str(self.binary), "--listen", "127.0.0.1:0", *self.args],
            stdout=subprocess.PIPE, stderr=self.logf, stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("listening on http://"):
            self.__exit__(None, None, None)
            raise BenchError(f"emulator did not start (said {line!r}); see {self.log}")
        self.url = line.removeprefix("listening on ")
        return self

    def __exit__(self, *exc) -> None:
        if self._conn:
            self._conn.close()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()

    def _call(self, method: str, path: str) -> dict:
        req = urllib.request.Request(self.url + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid)

    def stats(self) -> dict:
        return self._call("GET", "/_emulator/stats")

    def poll_uploads(self) -> int:
        """The emulator's upload count, over one kept-alive connection: cheap
        enough to call every few milliseconds."""
        for attempt in range(2):
            if self._conn is None:
                u = urllib.parse.urlsplit(self.url)
                self._conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
            try:
                self._conn.request("GET", "/_emulator/stats")
                resp = self._conn.getresponse()
                body = resp.read()
                return json.loads(body)["uploads"]
            except (http.client.HTTPException, OSError):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def set_knobs(self, patch: dict) -> dict:
        """POST /_emulator/knobs with a partial knobs object."""
        req = urllib.request.Request(self.url + "/_emulator/knobs", method="POST", data=json.dumps(patch).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        self._call("POST", "/_emulator/reset")
        stats = self.stats()
        if stats["uploads"] or stats["unique_checksums"] or stats["in_flight"]:
            raise BenchError(f"emulator reset left counters behind: {stats}")


@dataclass
class Ctx:
    agent: Path
    emulator: Path
    runs: int
    minutes: float = 10.0  # soak only
    source: Path = ROOT  # the tree the binaries were built from (build only)
    adaptive: bool = False  # the agent has adaptive concurrency (`--concurrency N` pins it)

    def __post_init__(self) -> None:
        helptext = subprocess.run([str(self.agent), "--help"], capture_output=True, text=True).stdout
        self.adaptive = "--concurrency" in helptext


def agent_env(folder: Path, emu_url: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANOVA_")}
    env.update(TANOVA_FOLDER_PATH=str(folder), TANOVA_API_KEY=API_KEY, TANOVA_URL=emu_url, **extra)
    return env


def run_agent(ctx: Ctx, emu: Emulator, folder: Path, state: Path, log_name: str,
              flags: list = (), extra_env: dict | None = None) -> tuple[Measured, dict]:
    """One `tanova-sync sync --json -q [flags]`; returns the measurement and the parsed JSON summary."""
    argv = [str(ctx.agent), "sync", "--json", "-q", "--state-dir", str(state), *flags]
    env = agent_env(folder, emu.url, **(extra_env or {}))
    m = measure(argv, env=env, cwd=OUT, stdout_to=LOGS / f"{log_name}.json", stderr_to=LOGS / f"{log_name}.err")
    extra = " ".join(f"{k}={v}" for k, v in (extra_env or {}).items())
    repro = (f"see {LOGS / log_name}.{{json,err}}; reproduce: (emulator: {emu.binary} --listen 127.0.0.1:0 "
             f"{' '.join(emu.args)}) cd {OUT} && TANOVA_FOLDER_PATH='{folder}' TANOVA_API_KEY={API_KEY} "
             f"TANOVA_URL=<emulator url> {extra} {' '.join(argv)}")
    try:
        summary = json.loads(m.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise BenchError(f"agent printed no JSON summary (exit {m.exit_code}); {repro}")
    if m.exit_code != 0 or "error" in summary:
        failures = summary.get("failures") or []
        what = summary.get("error") or (f"{len(failures)} files failed, e.g. {failures[0]['path']}: {failures[0]['reason']}"
                                        if failures else "no error given")
        raise BenchError(f"agent exited {m.exit_code}: {what}; {repro}")
    summary["_repro"] = repro
    return m, summary


def expect(what: str, checks: dict, repro: str) -> None:
    """checks: label -> (actual, wanted). Raise if any differs."""
    bad = {k: v for k, v in checks.items() if v[0] != v[1]}
    if bad:
        lines = "; ".join(f"{k} = {a} (want {w})" for k, (a, w) in bad.items())
        raise BenchError(f"{what}: {lines}; {repro}")


def expect_full_sync(what: str, s: dict, st: dict, c: Corpus) -> None:
    """A cold sync of the whole corpus: every file uploaded once, nothing else."""
    expect(what, {
        "found": (s["found"], c.files), "synced": (s["synced"], c.files),
        "failed": (s["failed"], 0), "duplicates": (s["duplicates"], 0),
        "hashed": (s.get("hashed", c.files), c.files),
        "bytes_uploaded": (s["bytes_uploaded"], c.bytes),
        "emulator uploads": (st["uploads"], c.files),
        "emulator unique_checksums": (st["unique_checksums"], c.files),
        "emulator duplicate_uploads": (st["duplicate_uploads"], 0),
        "emulator bytes_received": (st["bytes_received"], c.bytes),
    }, s["_repro"])


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# Results


@dataclass
class Row:
    scenario: str
    name: str
    samples_s: list
    rss_kib: list = field(default_factory=list)
    cpu_s: list = field(default_factory=list)  # user + sys of the measured process
    bound_s: float | None = None  # the ideal time, for a ratio
    ratio_to: str | None = None  # or: ratio against another row of the same scenario
    extra: dict = field(default_factory=dict)
    notes: str = ""
    error: str | None = None  # the measurement failed its correctness checks: no time is reported
    unit: str = "s"  # "s", or "ms" for latencies (samples are still in seconds)

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.samples_s) if self.samples_s and not self.error else None


def ratio(row: Row, rows: list) -> tuple[float | None, str]:
    """Against the bound, or against another row. Rows measured in the same
    loop have as many samples, paired by run: then the ratio is the median of
    the per-run ratios (each pair shares the machine's load of that moment)."""
    if row.median_s is None:
        return None, ""
    if row.bound_s:
        return row.median_s / row.bound_s, f"vs bound {row.bound_s:.2f} s"
    if row.ratio_to:
        other = next((r for r in rows if r.scenario == row.scenario and r.name == row.ratio_to and r.median_s), None)
        if other:
            if len(other.samples_s) == len(row.samples_s):
                return (statistics.median(a / b for a, b in zip(row.samples_s, other.samples_s)),
                        f"vs {other.name} (paired)")
            return row.median_s / other.median_s, f"vs {other.name}"
    return None, ""


def fmt_time(row: Row, seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if row.unit == "ms" else f"{seconds:.3f}"


def print_table(rows: list) -> None:
    header = ("scenario", "measurement", "runs", "median s", "min–max s", "ratio", "peak RSS MiB", "CPU s", "notes")
    table = [header]
    for r in rows:
        q, label = ratio(r, rows)
        if r.error:
            table.append((r.scenario, r.name, str(len(r.samples_s)), "FAILED", "", "", "", "", "see below"))
            continue
        table.append((
            r.scenario, r.name, str(len(r.samples_s)), fmt_time(r, r.median_s),
            f"{fmt_time(r, min(r.samples_s))}–{fmt_time(r, max(r.samples_s))}",
            f"{q:.2f}× {label}" if q is not None else "",
            f"{statistics.median(r.rss_kib) / 1024:.1f}" if r.rss_kib else "",
            f"{statistics.median(r.cpu_s):.2f}" if r.cpu_s else "",
            r.notes,
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for n, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    for r in rows:
        if r.error:
            print(f"\nFAILED {r.scenario} / {r.name}: {r.error}")


def row_json(r: Row, rows: list) -> dict:
    q, basis = ratio(r, rows)
    return {
        "scenario": r.scenario, "name": r.name, "samples_s": r.samples_s, "median_s": r.median_s,
        "ratio": q, "ratio_basis": basis, "bound_s": r.bound_s,
        "error": r.error, "notes": r.notes,
        "cpu_s": r.cpu_s, "median_cpu_s": statistics.median(r.cpu_s) if r.cpu_s else None,
        "rss_kib": r.rss_kib, "median_rss_kib": statistics.median(r.rss_kib) if r.rss_kib else None,
        "extra": r.extra,
    }


def markdown_report(names: list, rev: str | None = None) -> str:
    """A Markdown table of the latest results of these scenarios (bench/out/results/SCENARIO.json,
    or SCENARIO@REV.json for a run with --rev REV)."""
    lines = ["| scenario | measurement | runs | median | min–max | ratio | peak RSS | CPU | notes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        path = RESULTS / (f"{name}.json" if not rev else f"{name}@{git('rev-parse', '--short=12', rev)}.json")
        if not path.is_file():
            lines.append(f"| {name} | (not run) | | | | | | | |")
            continue
        data = json.loads(path.read_text())
        for r in data["rows"]:
            ms = r["name"].startswith("close")
            fmt = (lambda x: f"{x * 1000:.1f} ms") if ms else (lambda x: f"{x:.2f} s" if x >= 1 else f"{x:.3f} s")
            if r["error"]:
                lines.append(f"| {name} | {r['name']} | {len(r['samples_s'])} | **FAILED** | | | | | {r['error'][:200]} |")
                continue
            q = f"{r['ratio']:.2f}× {r['ratio_basis']}" if r["ratio"] is not None else ""
            rss = f"{r['median_rss_kib'] / 1024:.1f} MiB" if r["median_rss_kib"] else ""
            cpu = f"{r['median_cpu_s']:.2f} s" if r["median_cpu_s"] is not None else ""
            lines.append(f"| {name} | {r['name']} | {len(r['samples_s'])} | {fmt(r['median_s'])} | "
                         f"{fmt(min(r['samples_s']))}–{fmt(max(r['samples_s']))} | {q} | {rss} | {cpu} | {r['notes']} |")
    return "\n".join(lines)


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def p99(samples: list) -> float:
    """Nearest-rank 99th percentile: of 100 samples, the second largest."""
    ordered = sorted(samples)
    return ordered[max(math.ceil(0.99 * len(ordered)) - 1, 0)]


# --------------------------------------------------------------------------
# Scenarios: throughput against a slow service with a capacity (issue 4)

LATENCY_MS = 300


def capacity_scenario(ctx: Ctx, scenario: str, corpus_name: str, capacity: int, flags: list,
                      flags_note: str) -> list:
    """A cold sync of a corpus against 300 ms uploads and `capacity` uploads at
    once (429 beyond), with no concurrency configured (the adaptive default),
    and, alternated with it in each run, pinned at the capacity: the same
    agent told the answer, which shows what is left once the controller's
    search costs nothing. Each row's ratio is to the capacity bound,
    files × latency ÷ capacity."""
    c = corpus(corpus_name)
    bound = c.files * LATENCY_MS / 1000 / capacity
    configs = [(f"adaptive, default{flags_note}", flags),
               (f"pinned --concurrency {capacity}", ["--concurrency", str(capacity)])]
    if not ctx.adaptive:
        configs = [(f"fixed --max-workers {capacity}", ["--max-workers", str(capacity)])]
    rows = {label: Row(scenario, f"sync {c.files}, {label}", [], bound_s=bound,
                       extra={"flags": fl, "runs": [], "corpus_bytes": c.bytes, "capacity": capacity,
                              "latency_ms": LATENCY_MS})
            for label, fl in configs}
    with Emulator(ctx.emulator, LOGS / f"{scenario}-emulator.log", latency_ms=LATENCY_MS, capacity=capacity) as emu:
        for run in range(ctx.runs):
            order = configs if run % 2 == 0 else configs[::-1]  # neither always goes first
            for label, fl in order:
                row = rows[label]
                if row.error:
                    continue
                n = configs.index((label, fl))
                emu.reset()
                state = fresh_dir(STATE / f"{scenario}-c{n}")
                try:
                    m, s = run_agent(ctx, emu, c.path, state, f"{scenario}-c{n}-run{run}", fl)
                    st = emu.stats()
                    expect_full_sync(f"run {run}", s, st, c)
                except BenchError as e:
                    row.error = str(e)
                    log(f"  {scenario} run {run} {label}: FAILED: {e}")
                    continue
                row.samples_s.append(m.wall_s)
                row.rss_kib.append(m.maxrss_kib)
                row.cpu_s.append(m.cpu_s)
                row.extra["runs"].append({"wall_s": m.wall_s, "agent_elapsed_s": s["elapsed_s"],
                                          "rejected_429": st["rejected_429"], "peak_in_flight": st["peak_in_flight"],
                                          "check_duplicate_calls": st["check_duplicate_calls"]})
                log(f"  {scenario} run {run} {label}: {m.wall_s:.2f} s ({m.wall_s / bound:.3f}×), "
                    f"RSS {m.maxrss_kib / 1024:.1f} MiB, 429s {st['rejected_429']}, peak in flight {st['peak_in_flight']}")
    for row in rows.values():
        runs = row.extra["runs"]
        if runs:
            row.notes = (f"429s {statistics.median(r['rejected_429'] for r in runs):g} (median), "
                         f"peak in flight {max(r['peak_in_flight'] for r in runs)}")
    return list(rows.values())


def bulk500(ctx: Ctx) -> list:
    return capacity_scenario(ctx, "bulk500", "bulk500", 32, [], "")


def bulk500_cap8(ctx: Ctx) -> list:
    return capacity_scenario(ctx, "bulk500-cap8", "bulk500", 8, [], "")


def bulk2000_cap128(ctx: Ctx) -> list:
    # The default ceiling is 64: a server that takes 128 needs a higher one.
    return capacity_scenario(ctx, "bulk2000-cap128", "bulk2000", 128, ["--max-workers", "256"],
                             " with --max-workers 256")


# --------------------------------------------------------------------------
# Scenarios: the client's own costs (issue 4)

OPENSSL_HASH = "find {dir} -type f -print0 | xargs -0 -P2 openssl dgst -sha256 > /dev/null"


def hash_alone(hash_argv: list, hashing: Row) -> None:
    """One timed run of the openssl baseline, added to its row."""
    h = measure(hash_argv)
    if h.exit_code != 0:
        raise BenchError(f"openssl hashing exited {h.exit_code}: {hash_argv[-1]}")
    hashing.samples_s.append(h.wall_s)
    hashing.cpu_s.append(h.cpu_s)
    log(f"  openssl alone: {h.wall_s:.2f} s")


def paired_with_hashing(ctx: Ctx, c: Corpus, hashing: Row):
    """Yield each run's number when it is the agent's turn, timing the openssl
    baseline over corpus `c` beside it; which goes first alternates, so
    neither always finds the warmer cache."""
    hash_argv = ["sh", "-c", OPENSSL_HASH.format(dir=shlex_quote(str(c.path)))]
    for run in range(ctx.runs):
        agent_first = run % 2 == 0
        if not agent_first:
            hash_alone(hash_argv, hashing)
        yield run
        if agent_first:
            hash_alone(hash_argv, hashing)


def bulk20k(ctx: Ctx) -> list:
    """20,000 CVs (about 2.4 GB) at zero latency and unlimited capacity: the
    client's own throughput. Alternated in each run with hashing the same files
    alone with openssl on both cores. Peak RSS is the agent's."""
    c = corpus("bulk20k")
    agent = Row("bulk20k", f"sync 20k ({c.bytes / 1e9:.2f} GB), zero latency", [],
                ratio_to="openssl hash alone (xargs -P2)", extra={"runs": [], "corpus_bytes": c.bytes})
    hashing = Row("bulk20k", "openssl hash alone (xargs -P2)", [], extra={"command": OPENSSL_HASH})
    with Emulator(ctx.emulator, LOGS / "bulk20k-emulator.log", latency_ms=0, capacity=0) as emu:
        for run in paired_with_hashing(ctx, c, hashing):
            emu.reset()
            emu_cpu = emu.cpu_s()
            state = fresh_dir(STATE / "bulk20k")
            m, s = run_agent(ctx, emu, c.path, state, f"bulk20k-run{run}")
            emu_cpu = emu.cpu_s() - emu_cpu
            st = emu.stats()
            expect_full_sync(f"bulk20k run {run}", s, st, c)
            agent.samples_s.append(m.wall_s)
            agent.rss_kib.append(m.maxrss_kib)
            agent.cpu_s.append(m.cpu_s)
            agent.extra["runs"].append({"wall_s": m.wall_s, "agent_elapsed_s": s["elapsed_s"],
                                        "emulator_cpu_s": emu_cpu, "peak_in_flight": st["peak_in_flight"]})
            log(f"  bulk20k run {run}: agent {m.wall_s:.2f} s (RSS {m.maxrss_kib / 1024:.1f} MiB, "
                f"CPU {m.cpu_s:.1f} s + emulator {emu_cpu:.1f} s)")
    emu_cpu = statistics.median(r["emulator_cpu_s"] for r in agent.extra["runs"])
    agent.notes = f"emulator CPU {emu_cpu:.1f} s; {c.bytes / statistics.median(agent.samples_s) / 1e6:.0f} MB/s"
    hashing.notes = f"{c.bytes / statistics.median(hashing.samples_s) / 1e6:.0f} MB/s"
    return [hashing, agent]


def legacy_history_of(c: Corpus) -> Path:
    """The Python script's sync_history.json listing every file of the corpus,
    written once beside it (outside the tree)."""
    history = CORPORA / f"{c.path.name}.sync_history.json"
    if not history.is_file():
        sums = []
        for dirpath, _, names in os.walk(c.path):
            for name in names:
                sums.append(sha256_file(Path(dirpath) / name))
        history.write_text(json.dumps(sorted(sums)))
    return history


def migrate20k(ctx: Ctx) -> list:
    """Issue 12: the first start of an agency moving from the script. The
    20,000 CVs of bulk20k are all in the script's sync_history.json, so the
    agent hashes every file once and uploads nothing. Alternated in each run
    with openssl hashing the same files on both cores; warm cache."""
    c = corpus("bulk20k")
    history = legacy_history_of(c)
    agent = Row("migrate20k", f"first start, 20k CVs ({c.bytes / 1e9:.2f} GB) all in sync_history.json", [],
                ratio_to="openssl hash alone (xargs -P2)", extra={"runs": []})
    hashing = Row("migrate20k", "openssl hash alone (xargs -P2)", [], extra={"command": OPENSSL_HASH})
    with Emulator(ctx.emulator, LOGS / "migrate20k-emulator.log", latency_ms=0, capacity=0) as emu:
        for run in paired_with_hashing(ctx, c, hashing):
            emu.reset()
            state = fresh_dir(STATE / "migrate20k")
            m, s = run_agent(ctx, emu, c.path, state, f"migrate20k-run{run}",
                             flags=["--legacy-history", str(history)])
            st = emu.stats()
            expect(f"migrate20k run {run}", {
                "found": (s["found"], c.files), "skipped": (s["skipped"], c.files),
                "hashed": (s.get("hashed", 0), c.files), "failed": (s["failed"], 0),
                "emulator uploads": (st["uploads"], 0),
            }, s["_repro"])
            agent.samples_s.append(m.wall_s)
            agent.rss_kib.append(m.maxrss_kib)
            agent.cpu_s.append(m.cpu_s)
            agent.extra["runs"].append({"wall_s": m.wall_s, "agent_elapsed_s": s["elapsed_s"]})
            log(f"  migrate20k run {run}: agent {m.wall_s:.2f} s (RSS {m.maxrss_kib / 1024:.1f} MiB)")
    agent.notes = f"{c.bytes / statistics.median(agent.samples_s) / 1e6:.0f} MB/s"
    hashing.notes = f"{c.bytes / statistics.median(hashing.samples_s) / 1e6:.0f} MB/s"
    return [hashing, agent]


def shlex_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def noop_restart(ctx: Ctx, scenario: str, corpus_name: str) -> list:
    """A first full sync at zero latency into a fresh state (setup, timed once),
    then `--runs` no-op restarts on that state, each alternated with a bare
    stat walk of the same tree (`find -printf`), warm cache."""
    c = corpus(corpus_name)
    files = c.files
    label = f"{files // 1000}k" if files < 1_000_000 else f"{files // 1_000_000}M"
    state = fresh_dir(STATE / scenario)
    find_argv = ["find", str(c.path), "-type", "f", "-printf", "%s %T@\\n"]
    with Emulator(ctx.emulator, LOGS / f"{scenario}-emulator.log", latency_ms=0, capacity=0) as emu:
        emu.reset()
        emu_cpu = emu.cpu_s()
        log(f"  {scenario}: first sync of {files} files (setup)…")
        m, s = run_agent(ctx, emu, c.path, state, f"{scenario}-first")
        emu_cpu = emu.cpu_s() - emu_cpu
        st = emu.stats()
        expect_full_sync(f"{scenario} first sync", s, st, c)
        checks_after_first = st["check_duplicate_calls"]
        first = Row(scenario, f"first sync {label} at zero latency (setup)", [m.wall_s], [m.maxrss_kib], [m.cpu_s],
                    extra={"agent_elapsed_s": s["elapsed_s"], "emulator_cpu_s": emu_cpu,
                           "corpus_bytes": c.bytes, "dirs": c.dirs,
                           "state_bytes": sum(f.stat().st_size for f in state.rglob("*") if f.is_file())},
                    notes=f"emulator CPU {emu_cpu:.1f} s")
        log(f"  {scenario} first sync: {m.wall_s:.2f} s, RSS {m.maxrss_kib / 1024:.1f} MiB, "
            f"CPU agent {m.cpu_s:.2f} s + emulator {emu_cpu:.2f} s")
        agent_s, agent_rss, agent_cpu, find_s, find_cpu, extra = [], [], [], [], [], []
        for run in range(ctx.runs):
            if run % 2:  # alternate which goes first, so neither always gets the other's leftovers
                f = measure(find_argv)
            m, s = run_agent(ctx, emu, c.path, state, f"{scenario}-restart-run{run}")
            st = emu.stats()
            expect(f"{scenario} no-op restart run {run}", {
                "found": (s["found"], files), "synced": (s["synced"], 0), "skipped": (s["skipped"], files),
                "hashed (files re-read)": (s.get("hashed", 0), 0),
                "failed": (s["failed"], 0), "emulator uploads (cumulative)": (st["uploads"], files),
                "check-duplicate calls since the first sync": (st["check_duplicate_calls"] - checks_after_first, 0),
            }, s["_repro"])
            if not run % 2:
                f = measure(find_argv)
            if f.exit_code != 0:
                raise BenchError(f"find exited {f.exit_code}: {' '.join(find_argv)}")
            agent_s.append(m.wall_s)
            agent_rss.append(m.maxrss_kib)
            agent_cpu.append(m.cpu_s)
            find_s.append(f.wall_s)
            find_cpu.append(f.cpu_s)
            extra.append({"agent_elapsed_s": s["elapsed_s"]})
            log(f"  {scenario} run {run}: agent {m.wall_s:.3f} s (RSS {m.maxrss_kib / 1024:.1f} MiB), find {f.wall_s:.3f} s")
    return [
        first,
        Row(scenario, "find -printf (stat walk)", find_s, cpu_s=find_cpu),
        Row(scenario, f"no-op restart {label}", agent_s, agent_rss, agent_cpu, ratio_to="find -printf (stat walk)",
            extra={"runs": extra},
            notes=f"{statistics.median(agent_s) / files * 1e6:.1f} µs per file"),
    ]


def first_sync(ctx: Ctx, scenario: str, corpus_name: str) -> list:
    """Issue 12: the first sync of many small files into a fresh state at zero
    latency and unlimited capacity: the agent's own cost per file (hash, two
    requests, two state writes), with the emulator's CPU beside it. Each run
    starts from an empty state and an empty emulator."""
    c = corpus(corpus_name)
    label = f"{c.files // 1000}k" if c.files < 1_000_000 else f"{c.files // 1_000_000}M"
    row = Row(scenario, f"first sync {label} small files, zero latency", [], extra={"runs": []})
    with Emulator(ctx.emulator, LOGS / f"{scenario}-emulator.log", latency_ms=0, capacity=0) as emu:
        for run in range(ctx.runs):
            emu.reset()
            emu_cpu = emu.cpu_s()
            state = fresh_dir(STATE / scenario)
            m, s = run_agent(ctx, emu, c.path, state, f"{scenario}-run{run}")
            emu_cpu = emu.cpu_s() - emu_cpu
            expect_full_sync(f"{scenario} run {run}", s, emu.stats(), c)
            state_bytes = sum(f.stat().st_size for f in state.rglob("*") if f.is_file())
            row.samples_s.append(m.wall_s)
            row.rss_kib.append(m.maxrss_kib)
            row.cpu_s.append(m.cpu_s)
            row.extra["runs"].append({"wall_s": m.wall_s, "emulator_cpu_s": emu_cpu, "state_bytes": state_bytes})
            log(f"  {scenario} run {run}: {m.wall_s:.2f} s, RSS {m.maxrss_kib / 1024:.1f} MiB, "
                f"CPU agent {m.cpu_s:.2f} s + emulator {emu_cpu:.2f} s, state {state_bytes / 1e6:.1f} MB")
    runs = row.extra["runs"]
    row.notes = (f"{statistics.median(row.samples_s) / c.files * 1e6:.0f} µs per file; agent CPU "
                 f"{statistics.median(row.cpu_s) / c.files * 1e6:.0f} µs/file, emulator "
                 f"{statistics.median(r['emulator_cpu_s'] for r in runs) / c.files * 1e6:.0f} µs/file; "
                 f"state {statistics.median(r['state_bytes'] for r in runs) / 1e6:.1f} MB")
    return [row]


def first20k(ctx: Ctx) -> list:
    return first_sync(ctx, "first20k", "noop20k")


def first1m(ctx: Ctx) -> list:
    return first_sync(ctx, "first1m", "noop1m")


def build_cost(ctx: Ctx) -> list:
    """Issue 12: a cold `cargo build --release` of the agent from an empty
    target directory (downloads already in ~/.cargo), and the size of the
    binary it makes. `--timings` writes the per-crate chart to bench/out/logs/."""
    row = Row("build", "cold cargo build --release -p tanova-sync", [], extra={"runs": []})
    for run in range(ctx.runs):
        target = fresh_dir(OUT / "build-target")
        argv = ["cargo", "build", "--release", "--locked", "-p", "tanova-sync", "--timings"]
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=ctx.source, env={**os.environ, "CARGO_TARGET_DIR": str(target)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed in {ctx.source}")
        size = (target / "release" / "tanova-sync").stat().st_size
        timings = sorted((target / "cargo-timings").glob("cargo-timing-*.html"))
        if timings:
            shutil.copy2(timings[-1], LOGS / f"build-timings-run{run}.html")
        row.samples_s.append(wall)
        row.extra["runs"].append({"wall_s": wall, "binary_bytes": size})
        log(f"  build run {run}: {wall:.0f} s, binary {size / 1e6:.1f} MB")
        shutil.rmtree(target)
    row.notes = f"binary {row.extra['runs'][-1]['binary_bytes'] / 1e6:.1f} MB"
    return [row]


def noop20k(ctx: Ctx) -> list:
    return noop_restart(ctx, "noop20k", "noop20k")


def noop1m(ctx: Ctx) -> list:
    return noop_restart(ctx, "noop1m", "noop1m")


# --------------------------------------------------------------------------
# Scenarios: watch mode (issue 3)


class Watcher:
    """`tanova-sync watch` on a folder, started and stopped the way a service
    manager would: environment variables, then SIGTERM."""

    def __init__(self, ctx: Ctx, emu: Emulator, folder: Path, state: Path, log_name: str):
        self.argv = [str(ctx.agent), "watch", "--json", "--state-dir", str(state)]
        self.err_path = LOGS / f"{log_name}.err"
        self.out_path = LOGS / f"{log_name}.json"
        self.repro = (f"see {self.err_path}; reproduce: (emulator: {emu.binary} --listen 127.0.0.1:0 "
                      f"{' '.join(emu.args)}) TANOVA_FOLDER_PATH='{folder}' TANOVA_API_KEY={API_KEY} "
                      f"TANOVA_URL=<emulator url> {' '.join(self.argv)}, then kill -TERM")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, env=agent_env(folder, emu.url), cwd=OUT,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        deadline = time.monotonic() + 30
        while "Watching " not in self.err_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise BenchError(f"the agent did not start watching; {self.repro}")
            time.sleep(0.01)

    def peak_rss_kib(self) -> int:
        return proc_peak_rss_kib(self.proc.pid)

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid)

    def stop(self) -> dict:
        """SIGTERM; the agent must exit 0 within 5 s. Returns the counts it
        reports for the time it watched."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(f"the agent did not stop within 5 s of SIGTERM; {self.repro}")
        err = self.err_path.read_text(errors="replace")
        if code != 0:
            raise BenchError(f"the agent exited {code} after SIGTERM; {self.repro}")
        line = next((l for l in err.splitlines() if "While watching:" in l), "")
        try:
            counts = line.split("While watching:", 1)[1].strip().rstrip(".").split(",")
            return {kind: int(n) for n, kind in (part.split() for part in counts)}
        except (IndexError, ValueError):
            raise BenchError(f"no 'While watching: …' line after SIGTERM; {self.repro}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


POLL_S = 0.002


def wait_for_uploads(emu: Emulator, n: int, timeout: float, poll_s: float = POLL_S) -> tuple[float, float]:
    """Poll until the emulator has recorded `n` uploads. Returns (lo, hi): the
    upload landed after `lo` (the send time of the last poll that did not see
    it) and before `hi` (the answer time of the first poll that did)."""
    deadline = time.perf_counter() + timeout
    lo = time.perf_counter()
    while True:
        sent = time.perf_counter()
        seen = emu.poll_uploads()
        answered = time.perf_counter()
        if seen >= n:
            return lo, answered
        if answered > deadline:
            raise BenchError(f"the emulator has {seen} of {n} uploads after {timeout:.0f} s")
        lo = sent
        time.sleep(poll_s)


def watch_latency(ctx: Ctx) -> list:
    """100 files written one at a time into a watched folder (write, close,
    wait until the emulator has it, next), against an emulator with no upload
    latency: the time from close() returning to the emulator having the
    upload is the agent's own delay (event, checks, hash, check-duplicate, upload)."""
    files = 100
    rng = random.Random(3)
    bodies = [file_body(rng, "pdf", f"watch latency cv {i}", rng.randint(20_000, 200_000)) for i in range(files)]
    total = sum(map(len, bodies))
    median_row = Row("watch-latency", "close → received, median of 100", [], unit="ms", extra={"runs": []})
    p99_row = Row("watch-latency", "close → received, p99 of 100", [], unit="ms")
    with Emulator(ctx.emulator, LOGS / "watch-latency-emulator.log", latency_ms=0, capacity=0) as emu:
        for run in range(ctx.runs):
            emu.reset()
            folder = fresh_dir(STATE / "watch-latency-folder")
            w = Watcher(ctx, emu, folder, fresh_dir(STATE / "watch-latency"), f"watch-latency-run{run}")
            try:
                time.sleep(0.3)  # the watcher is set up; let the initial (empty) sync's tail settle
                latencies, lower, resolution = [], [], []
                for i, body in enumerate(bodies):
                    path = folder / f"candidate_{run}_{i:03d}.pdf"
                    with open(path, "wb") as f:
                        f.write(body)
                    closed = time.perf_counter()
                    lo, hi = wait_for_uploads(emu, i + 1, timeout=30)
                    latencies.append(hi - closed)
                    lower.append(max(lo, closed) - closed)
                    resolution.append(hi - max(lo, closed))
                peak_rss = w.peak_rss_kib()
            finally:
                counts = w.stop()
            st = emu.stats()
            expect(f"watch-latency run {run}", {
                "synced while watching": (counts.get("synced"), files), "failed": (counts.get("failed"), 0),
                "emulator uploads": (st["uploads"], files), "emulator unique_checksums": (st["unique_checksums"], files),
                "emulator duplicate_uploads": (st["duplicate_uploads"], 0), "emulator bytes_received": (st["bytes_received"], total),
            }, w.repro)
            median_row.samples_s.append(statistics.median(latencies))
            p99_row.samples_s.append(p99(latencies))
            median_row.rss_kib.append(peak_rss)
            median_row.extra["runs"].append({"latencies_s": latencies, "lower_bounds_s": lower,
                                             "resolution_median_s": statistics.median(resolution)})
            log(f"  watch-latency run {run}: median {statistics.median(latencies) * 1000:.1f} ms, "
                f"p99 {p99(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms "
                f"(poll resolution {statistics.median(resolution) * 1000:.1f} ms)")
    runs = median_row.extra["runs"]
    res = statistics.median(r["resolution_median_s"] for r in runs)
    low_median = statistics.median(statistics.median(r["lower_bounds_s"]) for r in runs)
    low_p99 = statistics.median(p99(r["lower_bounds_s"]) for r in runs)
    median_row.notes = (f"upper bounds (first poll that saw it); lower bound {low_median * 1000:.1f} ms "
                        f"(last poll that did not); poll resolution {res * 1000:.1f} ms; 20–200 KB .pdf")
    pooled = [x for r in runs for x in r["latencies_s"]]
    p99_row.notes = (f"lower bound {low_p99 * 1000:.1f} ms; p99 of all {len(pooled)} pooled: {p99(pooled) * 1000:.1f} ms; "
                     f"max {max(pooled) * 1000:.1f} ms")
    return [median_row, p99_row]


def watch_burst(ctx: Ctx) -> list:
    """1,000 CVs copied (one `cp -r`) into a watched folder whose role folders
    exist, against 300 ms uploads and capacity 32: from the start of the copy
    to the emulator having the last upload. Alternated in each run with a
    one-shot `sync` of the same files, which shows whether watching has a
    slower path than syncing."""
    capacity = 32
    c = corpus("burst1000")
    bound = c.files * LATENCY_MS / 1000 / capacity
    burst = Row("watch-burst", f"burst of {c.files} copied in, watching", [], bound_s=bound, extra={"runs": []})
    sync = Row("watch-burst", f"sync of the same {c.files} (reference)", [], bound_s=bound, extra={"runs": []})
    with Emulator(ctx.emulator, LOGS / "watch-burst-emulator.log", latency_ms=LATENCY_MS, capacity=capacity) as emu:
        for run in range(ctx.runs):
            for what in (("watch", "sync") if run % 2 == 0 else ("sync", "watch")):
                emu.reset()
                state = fresh_dir(STATE / f"watch-burst-{what}")
                if what == "sync":
                    m, s = run_agent(ctx, emu, c.path, state, f"watch-burst-sync-run{run}")
                    st = emu.stats()
                    expect_full_sync(f"watch-burst sync run {run}", s, st, c)
                    sync.samples_s.append(m.wall_s)
                    sync.rss_kib.append(m.maxrss_kib)
                    sync.cpu_s.append(m.cpu_s)
                    sync.extra["runs"].append({"rejected_429": st["rejected_429"], "peak_in_flight": st["peak_in_flight"]})
                    continue
                folder = fresh_dir(STATE / "watch-burst-folder")
                for role in ROLES:
                    (folder / role).mkdir()
                w = Watcher(ctx, emu, folder, state, f"watch-burst-run{run}")
                try:
                    time.sleep(0.3)
                    cpu0 = w.cpu_s()
                    started = time.perf_counter()
                    cp = subprocess.run(["cp", "-r", f"{c.path}/.", str(folder)])
                    copied = time.perf_counter()
                    if cp.returncode != 0:
                        raise BenchError(f"cp exited {cp.returncode}")
                    _, done = wait_for_uploads(emu, c.files, timeout=120, poll_s=0.005)
                    cpu = w.cpu_s() - cpu0
                    peak_rss = w.peak_rss_kib()
                finally:
                    counts = w.stop()
                st = emu.stats()
                expect(f"watch-burst run {run}", {
                    "synced while watching": (counts.get("synced"), c.files), "failed": (counts.get("failed"), 0),
                    "emulator uploads": (st["uploads"], c.files),
                    "emulator unique_checksums": (st["unique_checksums"], c.files),
                    "emulator duplicate_uploads": (st["duplicate_uploads"], 0),
                    "emulator bytes_received": (st["bytes_received"], c.bytes),
                }, w.repro)
                burst.samples_s.append(done - started)
                burst.rss_kib.append(peak_rss)
                burst.cpu_s.append(cpu)
                burst.extra["runs"].append({"copy_s": copied - started, "rejected_429": st["rejected_429"],
                                            "peak_in_flight": st["peak_in_flight"]})
            log(f"  watch-burst run {run}: watch {burst.samples_s[-1]:.2f} s "
                f"({burst.samples_s[-1] / bound:.3f}×, copy {burst.extra['runs'][-1]['copy_s']:.2f} s, "
                f"429s {burst.extra['runs'][-1]['rejected_429']}), sync {sync.samples_s[-1]:.2f} s "
                f"({sync.samples_s[-1] / bound:.3f}×)")
    for row in (burst, sync):
        runs = row.extra["runs"]
        row.notes = (f"429s {statistics.median(r['rejected_429'] for r in runs):g} (median), "
                     f"peak in flight {max(r['peak_in_flight'] for r in runs)}")
    burst.notes += f"; the copy itself {statistics.median(r['copy_s'] for r in burst.extra['runs']):.2f} s"
    return [burst, sync]


# --------------------------------------------------------------------------
# Scenario: the shared ledger (issue 6)


class Redis:
    """redis-server on a free loopback port (append-only file, fsync every
    second: a realistic deployment), and the few commands the benchmark needs."""

    def __init__(self, workdir: Path):
        if shutil.which("redis-server") is None:
            raise BenchError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                     "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(workdir),
                     "--logfile", str(workdir / "redis.log")]
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.command("PING") == "PONG":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise BenchError("redis-server did not start")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args: str):
        """Send one command in RESP and read a simple, integer or error reply."""
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(payload.encode())
            line = s.makefile("rb").readline().decode().rstrip("\r\n")
        kind, rest = line[:1], line[1:]
        if kind == "+":
            return rest
        if kind == ":":
            return int(rest)
        raise BenchError(f"redis answered {line!r} to {args[0]}")

    def restart(self) -> None:
        """SIGTERM (redis-server flushes its append-only file), then start again on the same port."""
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ledger(ctx: Ctx) -> list:
    """A cold sync of 2,000 small CVs (2–16 KiB) at zero latency with the
    local SQLite state, and the same with the shared Redis ledger (a local
    redis-server, AOF fsync every second), alternated in each run, each with a
    fresh state dir and an emptied Redis; then a no-op re-run of each (known
    locally: the Redis run asks Redis nothing)."""
    c = corpus("ledger2000")
    rows = {}
    for kind in ("sqlite", "redis"):
        for phase in ("cold", "noop"):
            name = f"{'cold sync' if phase == 'cold' else 'no-op re-run'}, {'SQLite' if kind == 'sqlite' else 'Redis ledger'}"
            rows[kind, phase] = Row("ledger", name, [], extra={"runs": []},
                                    ratio_to=(rows["sqlite", phase].name if kind == "redis" else None))
    redis_dir = fresh_dir(STATE / "ledger-redis")
    redis = Redis(redis_dir)
    try:
        with Emulator(ctx.emulator, LOGS / "ledger-emulator.log", latency_ms=0, capacity=0) as emu:
            for run in range(ctx.runs):
                for kind in (("sqlite", "redis") if run % 2 == 0 else ("redis", "sqlite")):
                    emu.reset()
                    env = {}
                    if kind == "redis":
                        redis.command("FLUSHALL")
                        env["TANOVA_STATE_URL"] = redis.url
                    state = fresh_dir(STATE / f"ledger-{kind}")
                    m, s = run_agent(ctx, emu, c.path, state, f"ledger-{kind}-run{run}", extra_env=env)
                    st = emu.stats()
                    expect_full_sync(f"ledger {kind} run {run}", s, st, c)
                    if kind == "redis":
                        expect(f"ledger redis run {run}", {"HLEN tanova:synced": (redis.command("HLEN", "tanova:synced"), c.files)},
                               s["_repro"])
                    n, again = run_agent(ctx, emu, c.path, state, f"ledger-{kind}-noop-run{run}", extra_env=env)
                    expect(f"ledger {kind} no-op re-run {run}", {
                        "skipped": (again["skipped"], c.files), "hashed": (again["hashed"], 0),
                        "synced": (again["synced"], 0), "emulator uploads": (emu.stats()["uploads"], c.files),
                    }, again["_repro"])
                    for phase, meas, summ in (("cold", m, s), ("noop", n, again)):
                        r = rows[kind, phase]
                        r.samples_s.append(meas.wall_s)
                        r.rss_kib.append(meas.maxrss_kib)
                        r.cpu_s.append(meas.cpu_s)
                        r.extra["runs"].append({"agent_elapsed_s": summ["elapsed_s"]})
                    log(f"  ledger run {run} {kind:6}: cold {m.wall_s:.3f} s, no-op re-run {n.wall_s:.3f} s")
    finally:
        redis.stop()
    return [rows["sqlite", "cold"], rows["redis", "cold"], rows["sqlite", "noop"], rows["redis", "noop"]]


# --------------------------------------------------------------------------
# Scenario: a long unattended watch with churn and faults (issue 10)

SOAK_KEY2 = "tanova_sk_emulator_rotated_000000002"
SOAK_KEY3 = "tanova_sk_emulator_revoked_000000003"
SOAK_SAMPLE_S = 5.0
SOAK_QUIET_S = 60.0


def proc_sample(pid: int) -> dict:
    """RSS (KiB), threads, open fds and CPU seconds of a live process, from /proc."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return {"rss_kib": rss, "threads": threads, "fds": len(os.listdir(f"/proc/{pid}/fd")), "cpu_s": proc_cpu_s(pid)}


def slope_per_min(points: list) -> float:
    """Least-squares slope of (t seconds, y) points, in y per minute."""
    if len(points) < 2:
        return 0.0
    mt = statistics.fmean(t for t, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / den * 60 if den else 0.0


class SoakAgent:
    """`tanova-sync watch --config FILE` with a status listener; the key lives
    in the config file only, so that rewriting the file is how a person gives
    it a new one."""

    def __init__(self, ctx: Ctx, config: Path, log_name: str):
        self.config = config
        self.argv = [str(ctx.agent), "watch", "--config", str(config)]
        self.err_path = LOGS / f"{log_name}.err"
        self.out_path = LOGS / f"{log_name}.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TANOVA_")}
        env.setdefault("RUST_LOG", "info")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, env=env, cwd=OUT, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.repro = f"see {self.err_path}; config {config}; {' '.join(self.argv)}"
        self.health_url = ""
        deadline = time.monotonic() + 60
        while True:
            text = self.err_path.read_text(errors="replace")
            if not self.health_url and "listening on http://" in text:
                addr = text.split("listening on http://", 1)[1].split()[0]
                self.health_url = f"http://{addr}/health"
            if self.health_url and "Watching " in text:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise BenchError(f"the agent did not start watching; {self.repro}")
            time.sleep(0.05)

    def health(self) -> str:
        try:
            with urllib.request.urlopen(self.health_url, timeout=3) as resp:
                return json.loads(resp.read()).get("status", "?")
        except urllib.error.HTTPError as e:
            try:
                return json.loads(e.read()).get("status", f"http {e.code}")
            except ValueError:
                return f"http {e.code}"
        except (OSError, ValueError) as e:
            return f"unreachable ({e.__class__.__name__})"

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(f"the agent did not stop within 10 s of SIGTERM; {self.repro}")
        if code != 0:
            raise BenchError(f"the agent exited {code} after SIGTERM; {self.repro}")
        err = self.err_path.read_text(errors="replace")
        line = next((l for l in err.splitlines() if "While watching:" in l), "")
        try:
            counts = line.split("While watching:", 1)[1].strip().rstrip(".").split(",")
            return {kind: int(n) for n, kind in (part.split()[:2] for part in counts)}
        except (IndexError, ValueError):
            return {"unparsed": line}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Churn:
    """What people do to a CV folder: new CVs, rewrites of existing ones (new
    bytes), renames, deletes, and now and then a whole subfolder copied in.
    Every content is distinct (a counter in its header), so the emulator's
    duplicate_uploads counts only the agent's double sends."""

    def __init__(self, folder: Path, seed: int):
        self.folder, self.rng, self.n = folder, random.Random(seed), 0
        self.counts = {"new": 0, "rewrite": 0, "rename": 0, "delete": 0, "subfolder": 0, "subfolder_files": 0}

    def body(self, ext: str) -> bytes:
        self.n += 1
        return file_body(self.rng, ext, f"soak content {self.n}", self.rng.randint(5_000, 60_000))

    def files(self) -> list:
        return sorted(p for p in self.folder.rglob("*") if p.is_file())

    def new(self, folder: Path | None = None) -> Path:
        ext = self.rng.choice(EXTENSIONS)
        folder = folder or self.folder / self.rng.choice(ROLES)
        folder.mkdir(parents=True, exist_ok=True)
        self.n += 1
        path = folder / cv_name(self.rng, self.n, ext)
        path.write_bytes(self.body(ext))
        return path

    def step(self) -> None:
        files = self.files()
        r = self.rng.random()
        if r < 0.30 or len(files) < 50:
            self.new()
            self.counts["new"] += 1
        elif r < 0.55:
            p = self.rng.choice(files)
            p.write_bytes(self.body(p.suffix.lstrip(".")))  # in place: truncate, write, close
            self.counts["rewrite"] += 1
        elif r < 0.75:
            p = self.rng.choice(files)
            target = self.folder / self.rng.choice(ROLES) / f"renamed_{self.n}_{p.name}"
            self.n += 1
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(p, target)
            self.counts["rename"] += 1
        else:
            self.rng.choice(files).unlink()
            self.counts["delete"] += 1

    def subfolder(self, staging: Path, files: int) -> None:
        """A folder written elsewhere, then copied in with `cp -r` (as from a USB stick or an email client)."""
        name = f"Imported {self.counts['subfolder']:02d}"
        src = fresh_dir(staging / name)
        for _ in range(files):
            self.new(src)
        cp = subprocess.run(["cp", "-r", str(src), str(self.folder / name)])
        if cp.returncode != 0:
            raise BenchError(f"cp -r exited {cp.returncode}")
        self.counts["subfolder"] += 1
        self.counts["subfolder_files"] += files


def sha256_file(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def soak_scenario(ctx: Ctx, scenario: str, use_redis: bool) -> list:
    """`tanova-sync watch` for --minutes (default 10) under constant churn,
    with faults at fixed fractions of the run: a key revocation answered by a
    new key in the config file (10%), a service outage, dropped connections
    (20% of the run, from 25%: 2 minutes of 10), a second revocation answered
    by restoring the emulator's key (60%), subfolders copied in (35%, during
    the outage, and 75%), and with the Redis ledger a redis-server restart
    (85%). Then a quiet phase: wait until every file in the folder is on the
    emulator, and measure the agent's idle CPU over 60 s. Samples RSS, fds,
    threads and CPU every 5 s."""
    duration = ctx.minutes * 60
    row = Row(scenario, f"watch {ctx.minutes:g} min with churn and faults", [], extra={})
    base = fresh_dir(STATE / scenario)
    folder, staging, state = base / "folder", base / "staging", base / "state"
    for d in (folder, staging, state):
        d.mkdir()
    churn = Churn(folder, seed=10)
    for _ in range(200):  # the folder as the agent finds it: the initial sync
        churn.new()
    redis = Redis(fresh_dir(base / "redis")) if use_redis else None
    config = base / "tanova-config.json"
    cfg = {"folder_path": str(folder), "api_key": API_KEY, "state_dir": str(state), "settle_ms": 500,
           "rescan_interval": 30, "retry_delay": 1, "listen": "127.0.0.1:0"}
    if redis:
        cfg["state_url"] = redis.url
    events, samples, health_log = [], [], []
    agent = None
    try:
        with Emulator(ctx.emulator, LOGS / f"{scenario}-emulator.log", latency_ms=200, capacity=8) as emu:
            cfg["tanova_url"] = emu.url
            config.write_text(json.dumps(cfg, indent=1))
            config.chmod(0o600)  # it holds the key
            emu.set_knobs({"error_rate": 0.02})
            agent = SoakAgent(ctx, config, f"{scenario}-run0")
            t0 = time.monotonic()

            def note(what: str) -> None:
                events.append({"t_s": round(time.monotonic() - t0, 1), "event": what})
                log(f"  [{time.monotonic() - t0:6.1f} s] {what}")

            def write_key(key: str) -> None:
                tmp = config.with_suffix(".tmp")
                tmp.write_text(json.dumps({**cfg, "api_key": key}, indent=1))
                tmp.chmod(0o600)
                os.replace(tmp, config)  # as an editor saves it

            schedule = sorted([
                (0.10, "revoke: emulator key -> key 2", lambda: emu.set_knobs({"api_key": SOAK_KEY2})),
                (0.15, "config file gets key 2", lambda: write_key(SOAK_KEY2)),
                (0.25, "outage: drop", lambda: emu.set_knobs({"outage": "drop"})),
                (0.35, "subfolder of 40 copied in (during the outage)", lambda: churn.subfolder(staging, 40)),
                (0.45, "outage ends", lambda: emu.set_knobs({"outage": None})),
                (0.60, "revoke: emulator key -> key 3", lambda: emu.set_knobs({"api_key": SOAK_KEY3})),
                (0.65, "emulator key restored to key 2", lambda: emu.set_knobs({"api_key": SOAK_KEY2})),
                (0.75, "subfolder of 40 copied in", lambda: churn.subfolder(staging, 40)),
                *([(0.85, "redis-server restart", redis.restart)] if redis else []),
            ], key=lambda e: e[0])
            next_sample = 0.0
            last_health = None

            def sample(phase: str) -> None:
                nonlocal last_health
                if agent.proc.poll() is not None:
                    raise BenchError(f"the agent exited {agent.proc.returncode} during the soak; {agent.repro}")
                s = {"t_s": round(time.monotonic() - t0, 1), "phase": phase, **proc_sample(agent.proc.pid),
                     "health": agent.health(), "uploads": emu.stats()["uploads"]}
                samples.append(s)
                if s["health"] != last_health:
                    health_log.append({"t_s": s["t_s"], "health": s["health"]})
                    log(f"  [{s['t_s']:6.1f} s] /health: {s['health']}")
                    last_health = s["health"]

            while True:
                now = time.monotonic() - t0
                if now >= next_sample:
                    sample("churn")
                    next_sample += SOAK_SAMPLE_S
                while schedule and now >= schedule[0][0] * duration:
                    _, what, act = schedule.pop(0)
                    act()
                    note(what)
                if now >= duration:
                    break
                churn.step()
                time.sleep(churn.rng.uniform(0.1, 0.9))  # about 2 changes a second
            note(f"churn stops: {churn.counts}")
            # Quiet: wait until every file in the folder is on the emulator.
            caught_up = None
            while caught_up is None:
                now = time.monotonic() - t0
                if now >= next_sample:
                    sample("catch-up")
                    next_sample += SOAK_SAMPLE_S
                uploaded = {u["checksum"] for u in emu._call("GET", "/_emulator/uploads")}
                missing = [p for p in churn.files() if sha256_file(p) not in uploaded]
                if not missing:
                    caught_up = now - duration
                    note(f"every file in the folder is on the emulator, {caught_up:.1f} s after the churn stopped")
                elif now - duration > 300:
                    note(f"{len(missing)} files still missing 300 s after the churn stopped")
                    break
                else:
                    time.sleep(1)
            cpu0, q0 = proc_cpu_s(agent.proc.pid), time.monotonic()
            while time.monotonic() - q0 < SOAK_QUIET_S:
                now = time.monotonic() - t0
                if now >= next_sample:
                    sample("quiet")
                    next_sample += SOAK_SAMPLE_S
                time.sleep(0.2)
            idle_cpu_pct = (proc_cpu_s(agent.proc.pid) - cpu0) / (time.monotonic() - q0) * 100
            sample("end")
            wall = time.monotonic() - t0
            # The final check, after the quiet phase.
            uploads = emu._call("GET", "/_emulator/uploads")
            uploaded = {u["checksum"] for u in uploads}
            final = churn.files()
            lost = [str(p.relative_to(folder)) for p in final if sha256_file(p) not in uploaded]
            st = emu.stats()
            counts = agent.stop()
            agent = None
    finally:
        if agent:
            agent.kill()
        if redis:
            redis.stop()
    start = samples[0]
    end = samples[-1]
    window_from = min(300.0, duration / 2)
    window = [s for s in samples if s["t_s"] >= window_from]

    # Flat: over the churn from the window's start (like with like: the quiet
    # phase holds no connections), the least-squares trend moves the value by
    # at most 10% of its mean over the window's length. Noise (connections
    # opening and closing) does not count; growth does.
    busy = [s for s in window if s["phase"] != "quiet" and s["phase"] != "end"]

    def drift(key: str) -> float:
        if len(busy) < 2:
            return float("nan")
        span = busy[-1]["t_s"] - busy[0]["t_s"]
        return slope_per_min([(s["t_s"], s[key]) for s in busy]) * span / 60 / statistics.fmean(s[key] for s in busy)

    def spread(key: str) -> float:
        vals = [s[key] for s in window]
        return max(vals) / min(vals) - 1 if vals and min(vals) else float("nan")

    # How long the agent took to deliver again after each fault was lifted: the
    # first 5-s sample at or after the event with /health ok and more uploads
    # than the emulator had at the event (an upper bound, to within a sample).
    resumed = {}
    for e in events:
        if e["event"] in ("config file gets key 2", "outage ends", "emulator key restored to key 2"):
            before = max((s["uploads"] for s in samples if s["t_s"] <= e["t_s"]), default=0)
            ok = next((s for s in samples if s["t_s"] >= e["t_s"] and s["health"] == "ok" and s["uploads"] > before), None)
            resumed[e["event"]] = round(ok["t_s"] - e["t_s"], 1) if ok else None
    def verdict(key: str) -> str:
        d = drift(key)
        return "flat" if abs(d) <= 0.10 else ("GREW" if d > 0 else "fell")

    slope = slope_per_min([(s["t_s"], s["rss_kib"]) for s in window])
    rss_flat, fds_flat = abs(drift("rss_kib")) <= 0.10, abs(drift("fds")) <= 0.10
    health_states = [h["health"] for h in health_log]
    row.samples_s.append(wall)
    row.rss_kib.append(max(s["rss_kib"] for s in samples))
    row.cpu_s.append(end["cpu_s"])
    row.extra = {
        "minutes": ctx.minutes, "wall_s": wall, "final_files": len(final), "lost": lost,
        "emulator": st, "agent_counts": counts, "churn": churn.counts, "events": events,
        "health_log": health_log, "resumed_after_s": resumed, "catch_up_s": caught_up, "idle_cpu_pct": idle_cpu_pct,
        "rss_start_kib": start["rss_kib"], "rss_end_kib": end["rss_kib"], "fds_start": start["fds"],
        "fds_end": end["fds"], "threads_start": start["threads"], "threads_end": end["threads"],
        "window_from_s": window_from, "rss_slope_kib_per_min": slope,
        "rss_window_spread": spread("rss_kib"), "fds_window_spread": spread("fds"),
        "rss_drift": drift("rss_kib"), "fds_drift": drift("fds"),
        "fds_slope_per_min": slope_per_min([(s["t_s"], s["fds"]) for s in busy]),
        "rss_window_kib": [min(s["rss_kib"] for s in window), max(s["rss_kib"] for s in window)],
        "fds_window": [min(s["fds"] for s in window), max(s["fds"] for s in window)],
        "rss_flat": rss_flat, "fds_flat": fds_flat, "samples": samples,
    }
    row.notes = (f"RSS {start['rss_kib'] / 1024:.1f}→{end['rss_kib'] / 1024:.1f} MiB, slope from {window_from / 60:g} min "
                 f"{slope:+.0f} KiB/min ({verdict('rss_kib')}: trend {drift('rss_kib') * 100:+.1f}%, "
                 f"min–max {row.extra['rss_window_kib'][0] / 1024:.1f}–{row.extra['rss_window_kib'][1] / 1024:.1f} MiB); "
                 f"fds {start['fds']}→{end['fds']} ({verdict('fds')}: trend {drift('fds') * 100:+.1f}%, "
                 f"min–max {row.extra['fds_window'][0]}–{row.extra['fds_window'][1]}); "
                 f"threads {start['threads']}→{end['threads']}; idle CPU {idle_cpu_pct:.2f}%; "
                 f"lost {len(lost)} of {len(final)}; agent's own tally {counts}; duplicates {st['duplicate_uploads']}; uploads {st['uploads']}; "
                 f"delivering again (≤, 5-s samples) " + ", ".join(f"{v if v is not None else 'never'} s after {k}"
                                                             for k, v in resumed.items()))
    log(f"  {scenario}: {row.notes}")
    (LOGS / f"{scenario}-samples.json").write_text(json.dumps(row.extra, indent=1) + "\n")
    problems = []
    if lost:
        problems.append(f"{len(lost)} files never reached the emulator, e.g. {lost[:3]}")
    if st["duplicate_uploads"]:
        problems.append(f"emulator duplicate_uploads = {st['duplicate_uploads']} (want 0)")
    for bad in ("key_rejected", "service_unreachable"):
        if health_states and health_states[-1] == bad:
            problems.append(f"/health still says {bad} at the end")
    if problems:
        row.error = "; ".join(problems) + f"; {agent_repro(config)}"
    return [row]


def agent_repro(config: Path) -> str:
    return f"see {LOGS}/soak*-run0.err and {LOGS}/soak*-samples.json; config {config}"


def soak(ctx: Ctx) -> list:
    return soak_scenario(ctx, "soak", use_redis=False)


def soak_ledger(ctx: Ctx) -> list:
    return soak_scenario(ctx, "soak-ledger", use_redis=True)


SCENARIOS = {
    "bulk500": bulk500,
    "bulk500-cap8": bulk500_cap8,
    "bulk2000-cap128": bulk2000_cap128,
    "bulk20k": bulk20k,
    "migrate20k": migrate20k,
    "noop20k": noop20k,
    "noop1m": noop1m,
    "first20k": first20k,
    "first1m": first1m,
    "build": build_cost,
    "watch-latency": watch_latency,
    "watch-burst": watch_burst,
    "ledger": ledger,
    "soak": soak,
    "soak-ledger": soak_ledger,
}
# Long scenarios, run only when named.
NOT_BY_DEFAULT = {"soak", "soak-ledger", "first1m", "build"}

# The corpora each scenario needs, for --prepare.
SCENARIO_CORPORA = {
    "bulk500": ["bulk500"], "bulk500-cap8": ["bulk500"], "bulk2000-cap128": ["bulk2000"],
    "bulk20k": ["bulk20k"], "migrate20k": ["bulk20k"], "noop20k": ["noop20k"], "noop1m": ["noop1m"],
    "first20k": ["noop20k"], "first1m": ["noop1m"], "build": [],
    "watch-latency": [], "watch-burst": ["burst1000"], "ledger": ["ledger2000"],
    "soak": [], "soak-ledger": [],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"default: all of {', '.join(SCENARIOS)}")
    parser.add_argument("--rev", metavar="REV", help="benchmark this git revision instead of the working tree")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per measurement (default 3; medians reported)")
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="how long soak and soak-ledger watch under churn (default 10)")
    parser.add_argument("--prepare", action="store_true", help="only generate the corpora the scenarios need")
    parser.add_argument("--report", action="store_true",
                        help="print the latest results of the scenarios (bench/out/results/) as a Markdown table; run nothing")
    args = parser.parse_args()
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown or args.runs < 1:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}" if unknown else "--runs must be at least 1")
    names = args.scenarios or [s for s in SCENARIOS if s not in NOT_BY_DEFAULT]
    if args.report:
        print(markdown_report(names, args.rev))
        return 0
    for d in (CORPORA, STATE, LOGS, RESULTS):
        d.mkdir(parents=True, exist_ok=True)
    if args.prepare:
        try:
            for name in dict.fromkeys(c for s in names for c in SCENARIO_CORPORA[s]):
                c = corpus(name)
                log(f"{name}: {c.files} files, {c.bytes / 1e6:.1f} MB, {c.dirs} folders, in {c.path}")
        except BenchError as e:
            log(f"\nBENCHMARK FAILED: {e}")
            return 1
        return 0
    try:
        agent, emulator, built, source = build(args.rev)
    except BenchError as e:
        log(f"\nBENCHMARK FAILED: {e}")
        return 1
    ctx = Ctx(agent, emulator, args.runs, minutes=args.minutes, source=source)
    info = machine()
    info["built_from"] = built
    info["agent_concurrency"] = "adaptive (--concurrency pins)" if ctx.adaptive else f"fixed, default {DEFAULT_WORKERS}"
    info["rss_floor_kib"] = measure(["true"]).maxrss_kib  # peak RSS reported for `true`: below this, RSS is not resolved
    command = " ".join(["python3", "bench/run.py", *sys.argv[1:]])
    rows = []
    for name in names:
        log(f"== {name}")
        started = time.perf_counter()
        try:
            got = SCENARIOS[name](ctx)
        except BenchError as e:
            log(f"  {name}: FAILED: {e}")
            got = [Row(name, "(scenario)", [], error=str(e))]
        rows += got
        scenario_info = {**info, "scenario_s": time.perf_counter() - started, "loadavg_end": os.getloadavg()}
        # A run of another revision does not overwrite the working tree's latest results.
        stem = name if not args.rev else f"{name}@{built}"
        (RESULTS / f"{stem}.json").write_text(json.dumps(
            {"machine": scenario_info, "command": command, "runs": args.runs,
             "rows": [row_json(r, got) for r in got]}, indent=1) + "\n")
    info["loadavg_end"] = os.getloadavg()
    print()
    print(f"{info['date']}  agent concurrency {info['agent_concurrency']}  {info['nproc']} cores  {info['cpu_model']}  "
          f"build {info['built_from']}  (warm page cache; RSS floor {info['rss_floor_kib'] / 1024:.1f} MiB)")
    print_table(rows)
    results = {"machine": info, "command": command, "runs": args.runs, "rows": [row_json(r, rows) for r in rows]}
    (OUT / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {OUT / 'results.json'} and {RESULTS}/SCENARIO.json")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
