#!/bin/bash
cat /proc/1/comm > init.txt
