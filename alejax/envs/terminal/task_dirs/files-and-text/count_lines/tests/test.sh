#!/bin/bash
# Reward 1 iff count.txt holds 37, the number of lines of data.txt.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(tr -d ' \n' < count.txt)" = "37" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
