#!/bin/bash
# Reward 1 iff project is a git repository whose one commit, initial import, holds all three files.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  cd project || return 1
  [ "$(git rev-list --count HEAD)" = 1 ] || return 1
  [ "$(git log -1 --format=%s)" = "initial import" ] || return 1
  [ "$(git ls-files | sort | tr '\n' ' ')" = "README.md docs/guide.md main.py " ] || return 1
  [ -z "$(git status --porcelain)" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
