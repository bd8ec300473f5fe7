#!/bin/bash
tr 'A-Z ' 'a-z\n' < text.txt | grep -v '^$' | sort | uniq -c | sort -rn | head -1 | awk '{print $2}' > top.txt
