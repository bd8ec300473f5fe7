#!/bin/bash
sed -i 's/-o logsum main.o$/-o logsum main.o -lm/' Makefile && make
