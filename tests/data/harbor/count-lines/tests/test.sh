#!/bin/bash
# Reward 1 iff count.txt holds the line count (from the verifier env) and greeting.txt the Dockerfile's ENV.
mkdir -p /logs/verifier
if [ "$(tr -d ' \n' < /app/count.txt 2>/dev/null)" = "$EXPECTED_LINES" ] \
   && [ "$(cat /app/greeting.txt 2>/dev/null)" = "hello-from-dockerfile" ]; then
  echo 1 > /logs/verifier/reward.txt
else
  echo 0 > /logs/verifier/reward.txt
fi
