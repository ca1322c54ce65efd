#!/usr/bin/env bash
# What a newcomer does, rehearsed: clone this repository's committed HEAD into a new private
# folder (mktemp -d: mode 700, like a home directory) under a path with a space in it, put a
# copy of ../shared beside the clone, and run the README's test command there.
#   scripts/fresh_clone_check.sh            one run
#   RUNS=3 scripts/fresh_clone_check.sh     three runs in a row in the same clone
#   KEEP=1 ...                              keep the folder (default: removed when it passes)
# Exit status: the first failing run's, else 0. Each run's pytest summary line is printed.
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
shared="$(dirname "$repo")/shared"
runs="${RUNS:-1}"
base="$(mktemp -d)"
clone="$base/iot fed"
echo "fresh-clone check: $(git -C "$repo" rev-parse --short HEAD) into '$clone' (folder mode $(stat -c %a "$base"))"
git clone --quiet "$repo" "$clone" || exit 1
if [ -d "$shared" ]; then
  cp -a "$shared" "$base/shared"
else
  echo "fresh-clone check: no $shared to copy (tests that read it will skip or fail)"
fi
rc=0
for i in $(seq 1 "$runs"); do
  log="$base/test-run-$i.log"
  start=$(date +%s)
  (cd "$clone" && make test PYTEST_ARGS="-q -rfEs") >"$log" 2>&1
  run_rc=$?
  summary="$(grep -E '(passed|failed|error).* in [0-9.]+s' "$log" | tail -1)"
  echo "run $i: exit $run_rc after $(( $(date +%s) - start )) s: ${summary:-no pytest summary (see $log)}"
  if [ "$run_rc" -ne 0 ] && [ "$rc" -eq 0 ]; then
    rc=$run_rc
    grep -E '^(FAILED|ERROR) ' "$log" | head -40
  fi
done
# the clone's services and their data (PostgreSQL's cluster lives outside the clone as root)
(cd "$clone" && .venv/bin/iot-fed services purge >/dev/null 2>&1) || true
if [ "$rc" -eq 0 ] && [ "${KEEP:-0}" != "1" ]; then
  rm -rf "$base"
else
  echo "fresh-clone check: logs and clone kept in '$base'"
fi
exit "$rc"
