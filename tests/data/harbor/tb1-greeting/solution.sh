#!/bin/bash
echo 'Hello, Terminal-Bench!' > /app/hello.txt
