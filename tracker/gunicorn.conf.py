# Defaults for serving the tracker; config `server.gunicorn` overrides any of them.
# The tracker keeps no state in the process (peers live in Redis), so it can run several
# workers; each gevent worker handles many concurrent announces.
worker_class = "common.worker.Worker"  # gevent, with zero-copy file bodies
workers = 2
worker_connections = 2000
timeout = 30
graceful_timeout = 5
keepalive = 30
# The control socket defaults to one path per user (~/.gunicorn); several components on
# one host would fight over it.
control_socket_disable = True
