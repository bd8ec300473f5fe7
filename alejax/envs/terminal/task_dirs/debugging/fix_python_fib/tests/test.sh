#!/bin/bash
# Reward 1 iff fib(0), fib(1), fib(2), fib(10) are 0, 1, 1, 55.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  python3 -c 'from fib import fib; assert [fib(i) for i in (0, 1, 2, 10)] == [0, 1, 1, 55]'
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
