#!/bin/bash
# Reward 1 iff main contains both its own last commit and feature's, with a clean work tree.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(git symbolic-ref --short HEAD)" = main ] || return 1
  git merge-base --is-ancestor "$(cat "$TEST_DIR/feature.txt")" HEAD || return 1
  git merge-base --is-ancestor "$(cat "$TEST_DIR/main.txt")" HEAD || return 1
  [ -f farewell.py ] && [ -f docs/farewell.md ] && [ -f test_greet.py ] || return 1
  [ -z "$(git status --porcelain --untracked-files=no)" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
