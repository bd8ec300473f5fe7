#!/bin/bash
# Reward 1 iff hello is an ELF executable that prints Hello from C.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(head -c 4 hello | od -An -c | tr -d ' ')" = "177ELF" ] && [ "$(./hello)" = "Hello from C" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
