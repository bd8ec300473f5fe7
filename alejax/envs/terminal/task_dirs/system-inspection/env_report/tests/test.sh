#!/bin/bash
# Reward 1 iff app_env.txt lists APP_MODE, APP_REGION and APP_WORKERS with their values.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(cat app_env.txt)" = "$(printf 'APP_MODE=staging\nAPP_REGION=eu-west-1\nAPP_WORKERS=4')" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
