import csv

with open("orders.csv", newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
assert rows[0] == ["id", "customer", "total", "n_items"], rows[0]
got = [(int(r[0]), r[1], float(r[2]), int(r[3])) for r in rows[1:]]
want = [(1, "Kim, J.", 40.0, 2), (2, 'Ray "R" Oz', 7.25, 0), (3, "Lee", 12.5, 1), (10, "Mo", 3.0, 3)]
assert got == want, got
