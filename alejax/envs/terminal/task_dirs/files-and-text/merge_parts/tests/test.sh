#!/bin/bash
# Reward 1 iff whole.txt is the parts in numeric order.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  cmp -s whole.txt "$TEST_DIR/expected.txt"
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
