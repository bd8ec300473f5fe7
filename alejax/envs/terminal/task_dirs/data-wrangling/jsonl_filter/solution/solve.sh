#!/bin/bash
python3 - <<'EOF' > api_errors.txt
import json

for line in open("events.jsonl"):
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        continue
    if event.get("level") == "error" and event.get("service") == "api":
        print(event["id"])
EOF
