#!/bin/bash
# Reward 1 iff stack.c passes the verifier's own copy of the tests.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  out=$(mktemp -d) || return 1
  cp stack.c "$out/" && cp "$TEST_DIR/stack.h" "$TEST_DIR/test_stack.c" "$out/" || return 1
  cc -O2 -o "$out/t" "$out/test_stack.c" "$out/stack.c" && "$out/t"
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
