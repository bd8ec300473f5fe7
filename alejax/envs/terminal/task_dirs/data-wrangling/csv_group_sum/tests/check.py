import csv

with open("totals.csv", newline="") as f:
    rows = list(csv.reader(f))
assert rows[0] == ["region", "total"], rows[0]
got = [(r[0], float(r[1])) for r in rows[1:]]
assert got == [("east", 32.0), ("north", 120.0), ("south", 45.0), ("west", 1.0)], got
