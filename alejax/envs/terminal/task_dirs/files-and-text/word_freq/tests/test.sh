#!/bin/bash
# Reward 1 iff top.txt holds cat, the most frequent word.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(tr -d ' \n' < top.txt)" = "cat" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
