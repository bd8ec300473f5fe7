#!/bin/bash
git merge -q --no-edit feature
