import csv

with open("scores.csv", newline="") as f:
    rows = list(csv.DictReader(f))
rows.sort(key=lambda row: row["score"], reverse=True)
for row in rows[:3]:
    print(row["name"], row["score"])
