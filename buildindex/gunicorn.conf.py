# Defaults for serving build-index; config `server.gunicorn` overrides any of them.
# Tags live in Redis, so several workers can serve them; each keeps its own in-memory
# replication queue for the tags it accepted.
worker_class = "common.worker.Worker"  # gevent, with zero-copy file bodies
workers = 2
worker_connections = 1000
# A docker-type PUT stats every blob of an image on the origins; give it time.
timeout = 60
graceful_timeout = 10
keepalive = 30
# The control socket defaults to one path per user (~/.gunicorn); several components on
# one host would fight over it.
control_socket_disable = True
