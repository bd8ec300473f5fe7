#!/bin/bash
# Reward 1 iff largest.txt names a/b/y.log.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(cat largest.txt)" = "a/b/y.log" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
