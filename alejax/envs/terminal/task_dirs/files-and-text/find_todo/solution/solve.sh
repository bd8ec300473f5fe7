#!/bin/bash
(cd src && grep -rl TODO . | sed 's|^./||' | sort > ../todo.txt)
