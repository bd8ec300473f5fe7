status = "ok"
