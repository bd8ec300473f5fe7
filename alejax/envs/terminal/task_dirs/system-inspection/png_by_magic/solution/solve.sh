#!/bin/bash
for f in incoming/*; do
    [ "$(head -c 8 "$f" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] && basename "$f"
done | sort > png_files.txt
