#!/bin/bash
find tools -maxdepth 1 -type f -perm -u+x -printf '%f\n' | sort > executables.txt
