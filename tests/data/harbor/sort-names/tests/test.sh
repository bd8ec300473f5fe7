#!/bin/bash
# Two named rewards (no "reward" key: the harness takes their mean).
mkdir -p /logs/verifier
exists=0; content=0
[ -f /work/sorted.txt ] && exists=1
cmp -s /work/sorted.txt "$TEST_DIR/expected.txt" && content=1
printf '{"exists": %d, "content": %d}\n' "$exists" "$content" > /logs/verifier/reward.json
