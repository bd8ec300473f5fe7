#!/bin/bash
# Reward 1 iff nofile.txt holds the soft RLIMIT_NOFILE.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(tr -d ' \n' < nofile.txt)" = "$(ulimit -n)" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
