#!/bin/bash
# Reward 1 iff answer.txt holds the hash of the commit that added API_TOKEN.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(tr -d ' \n' < answer.txt)" = "$(cat "$TEST_DIR/expected.txt")" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
