#!/bin/bash
# Reward 1 iff emails.txt lists the four distinct addresses, lowercased and sorted.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(cat emails.txt)" = "$(cat "$TEST_DIR/expected.txt")" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
