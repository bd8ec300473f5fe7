#!/bin/bash
# Reward 1 iff init.txt holds pid 1's command name.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(cat init.txt)" = "$(cat /proc/1/comm)" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
