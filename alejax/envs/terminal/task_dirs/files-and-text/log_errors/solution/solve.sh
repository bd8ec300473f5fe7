#!/bin/bash
awk '$2 == "ERROR"' server.log | wc -l | tr -d ' ' > errors.txt
