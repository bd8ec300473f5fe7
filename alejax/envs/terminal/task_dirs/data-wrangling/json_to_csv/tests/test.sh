#!/bin/bash
# Reward 1 iff orders.csv has the header and the orders sorted by id with their item counts, properly quoted.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  python3 "$TEST_DIR/check.py"
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
