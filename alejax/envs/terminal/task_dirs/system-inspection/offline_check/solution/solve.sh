#!/bin/bash
python3 -c 'import socket; s = socket.socket(); s.settimeout(2); print("online" if s.connect_ex(("1.1.1.1", 53)) == 0 else "offline")' > status.txt
