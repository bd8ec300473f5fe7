#!/bin/bash
# Reward 1 iff report.txt has colour replaced by color and nothing else changed.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  cmp -s report.txt "$TEST_DIR/expected.txt"
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
