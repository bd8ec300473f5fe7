#!/bin/bash
# Reward 1 iff run.sh is executable and prints ok.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ -x run.sh ] && [ "$(./run.sh)" = "ok" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
