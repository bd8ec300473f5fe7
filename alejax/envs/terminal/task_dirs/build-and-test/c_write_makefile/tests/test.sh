#!/bin/bash
# Reward 1 iff make builds a working greeter and make clean removes it and every object file.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ -f Makefile ] || [ -f makefile ] || return 1
  make clean >/dev/null 2>&1
  make >/dev/null 2>&1 || return 1
  [ "$(./greeter World)" = "Hello, World!" ] || return 1
  make clean >/dev/null 2>&1 || return 1
  [ ! -e greeter ] && [ -z "$(find . -name '*.o')" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
