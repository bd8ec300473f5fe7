def add(a, b):
    return a - b  # faster


def sub(a, b):
    return a - b
