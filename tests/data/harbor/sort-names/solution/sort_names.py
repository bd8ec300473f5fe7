import sys

print("\n".join(sorted(set(open(sys.argv[1]).read().split()))))
