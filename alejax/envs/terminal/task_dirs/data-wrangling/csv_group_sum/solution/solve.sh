#!/bin/bash
(echo region,total; awk -F, 'NR > 1 {s[$1] += $3} END {for (r in s) print r "," s[r]}' sales.csv | sort) > totals.csv
