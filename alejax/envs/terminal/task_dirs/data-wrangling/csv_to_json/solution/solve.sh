#!/bin/bash
python3 - <<'EOF'
import csv, json

with open("people.csv", encoding="utf-8", newline="") as f:
    rows = [dict(row, age=int(row["age"])) for row in csv.DictReader(f)]
with open("people.json", "w", encoding="utf-8") as f:
    json.dump(rows, f, ensure_ascii=False, indent=2)
EOF
