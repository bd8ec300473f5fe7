#!/bin/bash
# Reward 1 iff errors.txt holds 2, the number of lines at level ERROR.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(tr -d ' \n' < errors.txt)" = "2" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
