#!/bin/bash
# Reward 1 iff png_files.txt lists photo1.png, photo2.jpg and scan.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  [ "$(cat png_files.txt)" = "$(printf 'photo1.png\nphoto2.jpg\nscan')" ]
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
