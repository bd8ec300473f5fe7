#!/bin/bash
# Terminal-Bench 1 convention: tests live in $TEST_DIR; exit 0 iff solved.
sh "$TEST_DIR/check_hello.sh"
