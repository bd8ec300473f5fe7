#!/bin/bash
# Reward 1 iff merged.json equals the deep merge.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  python3 -c 'import json, sys; sys.exit(json.load(open("merged.json")) != json.load(open(sys.argv[1])))' "$TEST_DIR/expected.json"
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
