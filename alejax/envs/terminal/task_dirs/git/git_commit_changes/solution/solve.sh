#!/bin/bash
git add app.py utils.py && git commit -q -m "add utils"
