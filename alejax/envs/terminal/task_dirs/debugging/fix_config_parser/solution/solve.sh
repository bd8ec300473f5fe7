#!/bin/bash
python3 - <<'EOF'
source = open("config_parser.py").read()
source = source.replace(
    '        key, value = line.split("=")\n',
    '        if not line.strip() or line.strip().startswith("#"):\n'
    '            continue\n'
    '        key, value = line.split("=", 1)\n',
)
open("config_parser.py", "w").write(source)
EOF
