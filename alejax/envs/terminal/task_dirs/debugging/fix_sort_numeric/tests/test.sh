#!/bin/bash
# Reward 1 iff leaderboard.py ranks scores as numbers, on scores.csv and on the verifier's own scores.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(python3 leaderboard.py)" = "$(printf 'cy 100\ndee 25\nbob 10')" ] || return 1
  out=$(mktemp -d) && cp leaderboard.py "$out/" && cp "$TEST_DIR/scores.csv" "$out/" || return 1
  [ "$(cd "$out" && python3 leaderboard.py)" = "$(printf 'wes 1000\nxia 200\nvic 99')" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
