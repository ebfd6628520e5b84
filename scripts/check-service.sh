#!/usr/bin/env bash
# Checks scripts/forkring.service with `systemd-analyze verify`.
#
# verify exits 0 on many mistakes (an unknown key, a bad value: it only
# says "ignoring"), so any output at all counts as a failure here.
#
# It also complains when ExecStart's binary does not exist. This script
# installs nothing: install the binary first, as CI does:
#   cargo build --release
#   install -m755 target/release/forkring /usr/local/bin/forkring
#   scripts/check-service.sh
#
# Usage: scripts/check-service.sh [UNIT_FILE]   (default: the one beside it)
# Works without systemd running as PID 1.
set -euo pipefail

unit=${1:-"$(dirname "$0")/forkring.service"}

if ! command -v systemd-analyze >/dev/null; then
    echo "check-service: systemd-analyze not found; install it (Debian: apt-get install systemd)" >&2
    exit 1
fi
if [[ ! -f $unit ]]; then
    echo "check-service: no unit file at $unit; pass its path as the first argument" >&2
    exit 1
fi

set +e
output=$(systemd-analyze verify "$unit" 2>&1)
status=$?
set -e

if [[ -n $output || $status -ne 0 ]]; then
    echo "check-service: systemd-analyze verify $unit exited $status and said:" >&2
    printf '%s\n' "$output" >&2
    if [[ $output == *"is not executable"* ]]; then
        echo "check-service: install the binary first: install -m755 target/release/forkring /usr/local/bin/forkring" >&2
    fi
    exit 1
fi
echo "check-service: $unit verified, no complaints"
