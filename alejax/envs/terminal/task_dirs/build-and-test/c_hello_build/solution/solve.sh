#!/bin/bash
cc -O2 -o hello hello.c
