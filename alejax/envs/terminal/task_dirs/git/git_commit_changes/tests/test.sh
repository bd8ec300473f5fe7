#!/bin/bash
# Reward 1 iff HEAD is one new commit, add utils, holding exactly app.py and utils.py as they were, and debug.log is untracked.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(git rev-list --count HEAD)" = 2 ] || return 1
  [ "$(git log -1 --format=%s)" = "add utils" ] || return 1
  [ "$(git show --name-only --format= HEAD | sort | tr '\n' ' ')" = "app.py utils.py " ] || return 1
  cmp -s <(git show HEAD:app.py) "$TEST_DIR/app.py" && cmp -s <(git show HEAD:utils.py) "$TEST_DIR/utils.py" || return 1
  [ -f debug.log ] && ! git ls-files --error-unmatch debug.log >/dev/null 2>&1
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
