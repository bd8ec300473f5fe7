#!/bin/bash
# Reward 1 iff a/b/c/leaf.txt exists and holds leaf.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ -d a/b/c ] && [ "$(cat a/b/c/leaf.txt)" = "leaf" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
