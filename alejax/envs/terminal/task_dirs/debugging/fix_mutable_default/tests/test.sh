#!/bin/bash
# Reward 1 iff carts started by add_item are independent and a given cart is still appended to.
mkdir -p /logs/verifier
check() {
  cd /app || return 1
  python3 -c 'from cart import add_item; a = add_item("apple"); b = add_item("pear"); assert a == ["apple"] and b == ["pear"], (a, b); c = ["x"]; assert add_item("y", c) is c and c == ["x", "y"]'
}
if check; then reward=1; else reward=0; fi
echo "$reward" > /logs/verifier/reward.txt
