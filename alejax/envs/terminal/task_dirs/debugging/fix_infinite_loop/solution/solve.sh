#!/bin/bash
sed -i 's/            lo = mid$/            lo = mid + 1/' search.py
