#!/bin/bash
# Reward 1 iff bash_users.txt lists alice, carol and root.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(cat bash_users.txt)" = "$(printf 'alice\ncarol\nroot')" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
