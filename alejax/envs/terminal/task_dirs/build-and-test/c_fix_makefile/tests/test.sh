#!/bin/bash
# Reward 1 iff main.c is untouched and a clean make builds a logsum that sums base-10 logarithms.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  cmp -s main.c "$TEST_DIR/main.c" || return 1
  rm -f logsum main.o
  make >/dev/null 2>&1 || return 1
  [ "$(./logsum 10 100 1000)" = "6.000" ] && [ "$(./logsum 2 5)" = "1.000" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
