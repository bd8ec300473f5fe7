#!/bin/bash
# Reward 1 iff docs holds faq.md, intro.md, usage.md (with their contents) and notes.rst untouched.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(ls docs | sort | tr '\n' ' ')" = "faq.md intro.md notes.rst usage.md " ] &&
    [ "$(cat docs/faq.md)" = "# faq" ] && [ "$(cat docs/notes.rst)" = "keep" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
