#!/bin/bash
for d in logs/*/; do
    echo "$(basename "$d") $(find "$d" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')"
done | sort -k2,2nr > usage.txt
