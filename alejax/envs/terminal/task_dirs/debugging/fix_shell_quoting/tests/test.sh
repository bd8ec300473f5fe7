#!/bin/bash
# Reward 1 iff a fresh run of backup.sh copies all three listed files, spaces in names included.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  rm -rf backup
  bash backup.sh >/dev/null 2>&1
  [ "$(ls backup | sort | tr '\n' '|')" = "my notes.txt|plain.txt|report 2026.csv|" ] || return 1
  cmp -s "backup/my notes.txt" "my notes.txt" && cmp -s "backup/report 2026.csv" "report 2026.csv"
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
