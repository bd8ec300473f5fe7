#!/bin/bash
(cd project && git init -q && git add -A && git commit -q -m "initial import")
