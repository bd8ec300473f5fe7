#!/bin/bash
cat > backup.sh <<'EOF'
#!/bin/bash
# Copy every file listed in files.txt (one name per line) into backup/.
mkdir -p backup
while IFS= read -r f; do
    cp -- "$f" backup/
done < files.txt
echo "backed up $(ls backup | wc -l) files"
EOF
