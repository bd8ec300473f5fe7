#!/bin/bash
# Reward 1 iff add returns the sum and mul still multiplies.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  python3 -c 'from calc import add, mul; assert add(2, 3) == 5 and add(-1, 1) == 0 and mul(3, 4) == 12'
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
