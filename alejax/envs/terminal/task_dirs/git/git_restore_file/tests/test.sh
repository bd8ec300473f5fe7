#!/bin/bash
# Reward 1 iff notes.txt is back with its last content, committed on top as restore notes.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  cmp -s notes.txt "$TEST_DIR/notes.txt" || return 1
  [ "$(git log -1 --format=%s)" = "restore notes" ] && [ "$(git rev-list --count HEAD)" = 5 ] || return 1
  cmp -s <(git show HEAD:notes.txt) "$TEST_DIR/notes.txt"
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
