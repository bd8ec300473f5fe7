#!/bin/bash
# Reward 1 iff people.json holds the rows of people.csv as objects, age a number.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  python3 -c 'import json, sys; sys.exit(json.load(open("people.json", encoding="utf-8")) != json.load(open(sys.argv[1], encoding="utf-8")))' "$TEST_DIR/expected.json"
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
