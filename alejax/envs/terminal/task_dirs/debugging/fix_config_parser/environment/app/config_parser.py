def parse_config(text):
    """KEY = VALUE lines to a dict; blank lines and comment lines (starting with #) are skipped."""
    config = {}
    for line in text.splitlines():
        key, value = line.split("=")
        config[key.strip()] = value.strip()
    return config


if __name__ == "__main__":
    print(parse_config(open("app.conf").read()))
