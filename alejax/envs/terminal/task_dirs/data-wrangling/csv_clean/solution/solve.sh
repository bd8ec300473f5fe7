#!/bin/bash
python3 - <<'EOF'
import csv

seen, out = set(), []
with open("contacts_raw.csv", newline="") as f:
    header, *rows = [[field.strip() for field in row] for row in csv.reader(f)]
for row in rows:
    if row[1] and tuple(row) not in seen:
        seen.add(tuple(row))
        out.append(row)
with open("contacts.csv", "w", newline="") as f:
    csv.writer(f).writerows([header, *out])
EOF
