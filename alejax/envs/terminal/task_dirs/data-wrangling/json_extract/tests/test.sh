#!/bin/bash
# Reward 1 iff port.txt holds 5433.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(tr -d ' \n' < port.txt)" = "5433" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
