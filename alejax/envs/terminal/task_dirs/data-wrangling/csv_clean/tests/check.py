import csv

with open("contacts.csv", newline="") as f:
    rows = list(csv.reader(f))
want = [
    ["name", "email", "city"],
    ["Ana Lopez", "ana@example.com", "Lisbon"],
    ["Ben Ray", "ben@example.com", "Porto"],
    ["Dee Fox", "dee@example.com", "Braga"],
    ["Ben Ray", "ben@example.com", "Faro"],
]
assert rows == want, rows
