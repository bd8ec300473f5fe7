#!/bin/bash
# Reward 1 iff usage.txt is db 12000, api 5000, web 800.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(cat usage.txt)" = "$(printf 'db 12000\napi 5000\nweb 800')" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
