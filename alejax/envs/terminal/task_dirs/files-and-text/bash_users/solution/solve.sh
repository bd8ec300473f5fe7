#!/bin/bash
awk -F: '$7 == "/bin/bash" {print $1}' users.txt | sort > bash_users.txt
