#!/bin/bash
# Reward 1 iff a clean make builds a calc that multiplies its two arguments.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  rm -f calc
  make >/dev/null 2>&1 || return 1
  [ "$(./calc 6 7)" = 42 ] && [ "$(./calc -3 5)" = -15 ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
