import config

print(config.DEBUG)
