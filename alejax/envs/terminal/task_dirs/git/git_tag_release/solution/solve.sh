#!/bin/bash
git tag -a v1.0 -m "version 1.0" "$(git log --format=%H --grep='^release 1.0$')"
