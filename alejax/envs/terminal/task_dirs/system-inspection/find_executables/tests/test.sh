#!/bin/bash
# Reward 1 iff executables.txt lists build.sh and run.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(cat executables.txt)" = "$(printf 'build.sh\nrun')" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
