#!/bin/bash
# Reward 1 iff unique.txt lists the distinct names of names.txt, sorted.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(cat unique.txt)" = "$(printf 'ann\nbob\nmia\nzoe')" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
