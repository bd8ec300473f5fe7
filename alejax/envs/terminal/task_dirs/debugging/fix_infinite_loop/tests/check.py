from search import find

xs = list(range(0, 100, 3))
assert all(find(xs, x) == i for i, x in enumerate(xs))
assert find(xs, 4) == -1 and find(xs, 1000) == -1 and find(xs, -5) == -1 and find([], 1) == -1
