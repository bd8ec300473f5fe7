from config_parser import parse_config

text = "# c\n\nname = app\n   # indented comment\nurl = http://x/?a=1&b=2\n  port=80 \n"
assert parse_config(text) == {"name": "app", "url": "http://x/?a=1&b=2", "port": "80"}, parse_config(text)
assert parse_config(open("app.conf").read())["url"] == "https://shop.example.com/?lang=en"
