#!/bin/bash
# Reward 1 iff v1.0 is an annotated tag, message version 1.0, on the release 1.0 commit.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(git cat-file -t v1.0)" = tag ] || return 1
  [ "$(git rev-parse 'v1.0^{commit}')" = "$(cat "$TEST_DIR/release.txt")" ] || return 1
  [ "$(git for-each-ref --format='%(contents:subject)' refs/tags/v1.0)" = "version 1.0" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
