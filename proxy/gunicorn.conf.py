# Defaults for serving the proxy; config `server.gunicorn` overrides any of them.
# Upload state lives on local disk, not in the process, so several workers can share it;
# each gevent worker streams many uploads and downloads at once.
worker_class = "common.worker.Worker"  # gevent, with zero-copy file bodies
workers = 2
worker_connections = 1000
# A gevent worker's timeout is its heartbeat, not a request's duration: long layer uploads
# and downloads are fine.
timeout = 60
graceful_timeout = 10
keepalive = 30
# The control socket defaults to one path per user (~/.gunicorn); several components on
# one host would fight over it.
control_socket_disable = True
