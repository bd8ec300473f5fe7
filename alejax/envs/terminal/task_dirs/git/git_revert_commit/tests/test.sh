#!/bin/bash
# Reward 1 iff a new commit on top of the unchanged history restores add() and keeps README.md.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(git rev-list --count HEAD)" = 4 ] && [ "$(git rev-parse HEAD~1)" = "$(cat "$TEST_DIR/head.txt")" ] || return 1
  [ -f README.md ] && [ -z "$(git status --porcelain --untracked-files=no)" ] || return 1
  python3 -c 'from calc import add, sub; assert add(2, 3) == 5 and sub(5, 3) == 2'
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
