import csv

with open("report.csv", newline="") as f:
    rows = list(csv.reader(f))
assert rows[0] == ["name", "orders", "total"], rows[0]
got = [(r[0], int(r[1]), round(float(r[2]), 2)) for r in rows[1:]]
assert got == [("Abe", 1, 99.99), ("Ana", 2, 12.5), ("Ben", 0, 0.0), ("Cy", 2, 5.0)], got
