# Defaults for serving an origin; config `server.gunicorn` overrides any of them.
# ONE worker: the worker owns this host's libtorrent session (its listen port and its
# seeds). gevent gives it concurrency; more workers would split the host into several peers.
worker_class = "common.worker.Worker"  # gevent, with zero-copy file bodies
workers = 1
worker_connections = 2000
timeout = 60
graceful_timeout = 10
keepalive = 30
# The control socket defaults to one path per user (~/.gunicorn); several components on
# one host would fight over it.
control_socket_disable = True
