#!/bin/bash
env | grep '^APP_' | sort > app_env.txt
