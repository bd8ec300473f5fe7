#!/bin/bash
python3 - <<'EOF'
import json


def merge(base, override):
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{k: merge(base.get(k), v) for k, v in override.items()}}
    return override


merged = merge(json.load(open("defaults.json")), json.load(open("overrides.json")))
json.dump(merged, open("merged.json", "w"), indent=2)
EOF
