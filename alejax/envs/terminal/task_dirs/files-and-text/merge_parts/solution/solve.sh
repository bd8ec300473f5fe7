#!/bin/bash
ls parts/part-*.txt | sort -V | xargs cat > whole.txt
