#!/bin/bash
[ "$SORT_ORDER" = "ascending" ] || exit 1
python3 "$(dirname "$0")/sort_names.py" data/names.txt > sorted.txt
