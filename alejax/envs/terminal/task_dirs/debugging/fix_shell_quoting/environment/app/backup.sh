#!/bin/bash
# Copy every file listed in files.txt (one name per line) into backup/.
mkdir -p backup
for f in $(cat files.txt); do
    cp $f backup/
done
echo "backed up $(ls backup | wc -l) files"
