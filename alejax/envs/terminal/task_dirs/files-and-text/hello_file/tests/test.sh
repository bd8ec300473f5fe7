#!/bin/bash
# Reward 1 iff hello.txt holds the line Hello, world!.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(cat hello.txt)" = "Hello, world!" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
