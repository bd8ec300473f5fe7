#!/bin/bash
# Reward 1 iff summary.json matches nproc, /proc/meminfo's MemTotal and uname -r as the verifier sees them.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  python3 "$TEST_DIR/check.py"
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
