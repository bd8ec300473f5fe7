#!/bin/bash
sed -i 's/colour/color/g' report.txt
