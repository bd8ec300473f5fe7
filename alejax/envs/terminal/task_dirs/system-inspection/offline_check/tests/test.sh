#!/bin/bash
# Reward 1 iff status.txt says offline (the sandbox has no network).
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(tr -d ' \n' < status.txt)" = "offline" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
