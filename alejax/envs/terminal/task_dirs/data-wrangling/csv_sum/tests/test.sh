#!/bin/bash
# Reward 1 iff total.txt holds 47, the sum of the amount column.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(tr -d ' \n' < total.txt)" = "47" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
