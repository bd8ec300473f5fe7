#!/bin/bash
# Reward 1 iff the verifier's copy of main.py runs against the shapes package and prints both areas.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(python3 - < "$TEST_DIR/main.py")" = "$(printf '3.14 9\n12.57 2.25')" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
