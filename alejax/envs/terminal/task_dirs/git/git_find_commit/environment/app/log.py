import logging

log = logging.getLogger("app")
log.setLevel("INFO")
