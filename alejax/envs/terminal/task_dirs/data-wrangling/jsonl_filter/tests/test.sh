#!/bin/bash
# Reward 1 iff api_errors.txt lists e2, e6 and e8.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(cat api_errors.txt)" = "$(printf 'e2\ne6\ne8')" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
