#!/usr/bin/env bash
# Runs one Molecule scenario; when it fails, prints the journal of every lab host before
# tearing the lab down, and last (where a CI log's tail shows it) what failed.
set -uo pipefail
cd "$(dirname "$0")/.."
scenario=${1:?usage: scripts/molecule.sh SCENARIO}
export ANSIBLE_CONFIG=$PWD/ansible.cfg
log=.cache/molecule-$scenario.log
mkdir -p .cache
molecule test -s "$scenario" --destroy=never 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if ((rc != 0)); then
  echo "molecule scenario '$scenario' failed ($rc): journals of its hosts follow" >&2
  python3 lab/rvmlab.py journal --lab "molecule-$scenario" --lines 150
fi
molecule destroy -s "$scenario" || python3 lab/rvmlab.py down --lab "molecule-$scenario"
if ((rc != 0)); then
  echo >&2
  echo "=== molecule scenario '$scenario' failed ($rc); what failed (whole log: $log):" >&2
  grep -E -B2 -A12 '^(fatal|failed):|^FAILED |^ERROR |^E  |Executed: Failed|short test summary' "$log" \
    | tail -n 80 >&2
fi
exit $rc
