#!/usr/bin/env bash
# Runs one Molecule scenario; when it fails, prints the journal of every lab host
# before tearing the lab down, so the reason is in the CI log.
set -uo pipefail
cd "$(dirname "$0")/.."
scenario=${1:?usage: scripts/molecule.sh SCENARIO}
export ANSIBLE_CONFIG=$PWD/ansible.cfg
molecule test -s "$scenario" --destroy=never
rc=$?
if ((rc != 0)); then
  echo "molecule scenario '$scenario' failed ($rc): journals of its hosts follow" >&2
  python3 lab/rvmlab.py journal --lab "molecule-$scenario" --lines 150
fi
molecule destroy -s "$scenario" || python3 lab/rvmlab.py down --lab "molecule-$scenario"
exit $rc
