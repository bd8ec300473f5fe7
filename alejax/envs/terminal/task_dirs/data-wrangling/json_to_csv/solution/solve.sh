#!/bin/bash
python3 - <<'EOF'
import csv, json

orders = sorted(json.load(open("orders.json")), key=lambda o: o["id"])
with open("orders.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "customer", "total", "n_items"])
    for o in orders:
        writer.writerow([o["id"], o["customer"], o["total"], len(o["items"])])
EOF
