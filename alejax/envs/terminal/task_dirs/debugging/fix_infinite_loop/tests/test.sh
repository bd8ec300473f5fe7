#!/bin/bash
# Reward 1 iff find returns every index and -1 for missing values, quickly.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  timeout 3 python3 - < "$TEST_DIR/check.py"
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
