#!/usr/bin/env bash
# Chaos check from outside, as a user would: search the quickstart, SIGKILL one Ray worker
# mid-run, SIGKILL the driver, resume; then check 16 COMPLETE trials, no config built twice,
# every artifact checksum valid. Usage: RUN_DIR=/tmp/pf-chaos bash scripts/chaos_quickstart.sh
set -u
export RUN_DIR="${RUN_DIR:-/tmp/pf-chaos}"
rm -rf "${RUN_DIR:-/tmp/pf-chaos}"
cd "$(dirname "$0")/.."
.venv/bin/paretoforge search examples/quickstart.yaml --trials 16 --run-dir ${RUN_DIR:-/tmp/pf-chaos} > ${RUN_DIR:-/tmp/pf-chaos}.log 2>&1 &
DRV=$!
until [ "$(grep -c ' done:' ${RUN_DIR:-/tmp/pf-chaos}.log)" -ge 3 ]; do sleep 1; done
W=$(pgrep -f "ray::Worker" | head -1)
echo "killing ray worker $W: $(ps -o args= -p $W)"
kill -9 $W
until [ "$(grep -c ' done:' ${RUN_DIR:-/tmp/pf-chaos}.log)" -ge 8 ]; do sleep 1; done
echo "killing driver $DRV"; kill -9 $DRV; sleep 2
grep -E "died|retry|FAIL" ${RUN_DIR:-/tmp/pf-chaos}.log | head -5
.venv/bin/ray stop --force >/dev/null 2>&1
.venv/bin/paretoforge resume ${RUN_DIR:-/tmp/pf-chaos} > ${RUN_DIR:-/tmp/pf-chaos}2.log 2>&1; echo "resume rc=$?"
tail -3 ${RUN_DIR:-/tmp/pf-chaos}2.log
.venv/bin/python - <<'PY'
import json, os, paretoforge
from paretoforge._io import sha256_file
run = paretoforge.load_run(os.environ["RUN_DIR"])
ts = run.trials()
states = {}
for t in run.study.trials: states[t.state.name] = states.get(t.state.name, 0) + 1
built = [t.user_attrs["key"] for t in ts if "cached_from" not in t.user_attrs]
bad = 0
for d in (run.dir / "artifacts").iterdir():
    m = json.loads((d / "manifest.json").read_text())
    bad += sum(sha256_file(d / n) != h for n, h in m["files"].items())
print({"complete": len(ts), "states": states, "distinct_built": len(set(built)), "built": len(built), "bad_checksums": bad,
       "attempts>1": [t.number for t in ts if t.user_attrs.get("attempts", 1) > 1]})
PY
