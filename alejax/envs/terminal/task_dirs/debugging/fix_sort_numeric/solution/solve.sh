#!/bin/bash
sed -i 's/key=lambda row: row\["score"\]/key=lambda row: int(row["score"])/' leaderboard.py
