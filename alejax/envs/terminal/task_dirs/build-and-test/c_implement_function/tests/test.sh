#!/bin/bash
# Reward 1 iff strutil.c passes the verifier's own, longer copy of the tests.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  out=$(mktemp -d) || return 1
  cc -O2 -o "$out/t" -I. "$TEST_DIR/test_strutil.c" strutil.c && "$out/t"
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
