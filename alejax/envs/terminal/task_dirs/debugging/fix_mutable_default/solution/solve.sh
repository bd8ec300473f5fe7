#!/bin/bash
cat > cart.py <<'EOF'
def add_item(item, cart=None):
    """Add item to cart and return the cart; without a cart, start a new one."""
    if cart is None:
        cart = []
    cart.append(item)
    return cart
EOF
