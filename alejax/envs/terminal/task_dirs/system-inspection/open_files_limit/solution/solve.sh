#!/bin/bash
ulimit -n > nofile.txt
