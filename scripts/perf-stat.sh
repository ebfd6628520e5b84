#!/usr/bin/env bash
# Runs `forkring run` under `perf stat` and says what the counters mean.
#
# Usage: scripts/perf-stat.sh [forkring run args...]
#   With no arguments: a 2048x2048 image, seed 1, --quiet, into a temporary
#   directory.
#   --json is added (forkring's summary gives the iteration counts).
#
# The binary: $FORKRING, else target/release/forkring of this checkout, else
# `forkring` on PATH. Counters cover the supervisor and every role (perf
# stat follows forks and execs). Software events always; cycles and
# instructions only where the machine has hardware counters (many VMs do
# not). Needs perf (Debian: linux-perf) and python3.
#
# Exit status: forkring's own, or 1 if perf or python3 is missing.
# See docs/perf-stat.md for an example and how to read it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if [[ -n ${FORKRING:-} ]]; then
    bin=$FORKRING
elif [[ -x $here/../target/release/forkring ]]; then
    bin=$(cd "$here/.." && pwd)/target/release/forkring
elif command -v forkring >/dev/null; then
    bin=$(command -v forkring)
else
    echo "perf-stat: no forkring binary; build one (cargo build --release) or set FORKRING=/path/to/forkring" >&2
    exit 1
fi
for tool in perf python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "perf-stat: $tool not found; install it (Debian: apt-get install ${tool/perf/linux-perf})" >&2
        exit 1
    fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

args=("$@")
if [[ ${#args[@]} -eq 0 ]]; then
    args=(--size 2048 --seed 1 --quiet --name "perf-stat-$$" --out "$work/out")
fi
has_json=0
for a in "${args[@]}"; do
    [[ $a == --json ]] && has_json=1
done
[[ $has_json -eq 1 ]] || args+=(--json)

events=task-clock,context-switches,cpu-migrations,page-faults
# perf exits 0 even when a counter is "<not supported>": read the value.
probe=$(perf stat -x, -e instructions true 2>&1 >/dev/null | grep ',instructions' || true)
if [[ $probe =~ ^[0-9] ]]; then
    events+=,cycles,instructions
else
    echo "perf-stat: hardware counters (cycles, instructions) are not available here; counting software events only"
fi

echo "perf-stat: $bin run ${args[*]}"
set +e
started=$EPOCHREALTIME
perf stat -x, -o "$work/perf.csv" -e "$events" -- "$bin" run "${args[@]}" >"$work/summary.json"
status=$?
ended=$EPOCHREALTIME
set -e
if [[ $status -ne 0 ]]; then
    echo "perf-stat: forkring run exited $status (its message is above); counters of the partial run follow" >&2
fi

python3 - "$work/perf.csv" "$work/summary.json" "$started" "$ended" <<'EOF'
import json, sys

counters = {}
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split(",")
    if len(f) < 3 or line.startswith("#"):
        continue
    try:
        counters[f[2]] = float(f[0])
    except ValueError:
        counters[f[2]] = None  # <not supported> / <not counted>

summary = None
try:
    text = open(sys.argv[2]).read().strip()
    summary = json.loads(text.splitlines()[-1]) if text else None
except (ValueError, IndexError):
    pass

def num(name):
    return counters.get(name)

def fmt(v, unit=""):
    if v is None:
        return "not counted"
    return f"{v:,.1f}{unit}" if unit else f"{v:,.0f}"

print()
print("counters (supervisor + roles):")
for name, unit in [("task-clock", " ms"), ("context-switches", ""), ("cpu-migrations", ""),
                   ("page-faults", ""), ("cycles", ""), ("instructions", "")]:
    if name in counters:
        print(f"  {name:<17} {fmt(num(name), unit)}")

if summary is None:
    print("no JSON summary from forkring: nothing to relate the counters to")
    sys.exit(0)

seconds = summary.get("seconds") or 0.0
wall = float(sys.argv[4]) - float(sys.argv[3])
task_ms = num("task-clock")
cs = num("context-switches")
print()
print(f"run {summary.get('run')}: {seconds:.2f} s of work, {wall:.2f} s in all (start-up and handoff included)"
      + (", stopped by " + summary["stopped_by"] if summary.get("stopped_by") else ""))
if task_ms and wall > 0:
    print(f"  CPUs busy: {task_ms / 1000 / wall:.2f} on average over the {wall:.2f} s "
          "(near 2 while both roles spin; the handoff at the end is one process)")

image = summary.get("image")
if image and cs is not None and image.get("iterations"):
    it = image["iterations"]
    per = cs / it
    print(f"  image: {it:,} iterations, {it / seconds / 1e6:.2f} M/s" if seconds > 0 else f"  image: {it:,} iterations")
    if per < 0.05:
        verdict = "the turn handoff spins: the roles rarely give up their cores"
    elif per < 0.5:
        verdict = ("the handoff mostly spins, but a role often gives up its core "
                   "(preempted by other work, or yielding/sleeping after its spin budget)")
    else:
        verdict = ("about one switch per turn: the waiting role yields or sleeps on the futex every "
                   "turn, as when both roles share one core")
    print(f"  context switches per iteration: {per:.4f} -> {verdict}")

stream = summary.get("stream")
if stream and cs is not None and stream.get("received"):
    rx = stream["received"]
    print(f"  stream: {rx:,} vectors received; context switches per vector: {cs / rx:.4f} "
          "(near 0: the ring is drained in batches; about 1 or more: the consumer sleeps per vector)")

pf = num("page-faults")
shm = summary.get("shm_bytes")
if isinstance(shm, dict):  # summary.json schema 2: by owner, with the total
    shm = shm.get("total")
if pf is not None and shm:
    pages = shm / 4096
    print(f"  page faults: {pf:,.0f} for {shm / 2**20:.1f} MiB of segments ({pages:,.0f} pages): "
          f"{pf / pages:.2f} per page (first touches cost up to one fault per page in each of the "
          "3 processes that map it; far more would mean pages are faulted in again and again)")

mig = num("cpu-migrations")
if mig is not None:
    print(f"  cpu migrations: {mig:,.0f} (each moves a process to another core, away from its warm cache)")

cyc, ins = num("cycles"), num("instructions")
if cyc and ins:
    print(f"  instructions per cycle: {ins / cyc:.2f}")
EOF
exit "$status"
