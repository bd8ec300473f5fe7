#!/bin/bash
# Reward 1 iff todo.txt lists the files under src that contain TODO.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(cat todo.txt)" = "$(printf 'app/main.py\nlib/core.py\nreadme.txt')" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
