#!/bin/bash
git log --format=%H -S API_TOKEN -- config.py | tail -1 > answer.txt
