#!/bin/bash
wc -l < data.txt | tr -d ' ' > count.txt
printf '%s\n' "$GREETING" > greeting.txt
