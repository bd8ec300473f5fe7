def add_item(item, cart=[]):
    """Add item to cart and return the cart; without a cart, start a new one."""
    cart.append(item)
    return cart
