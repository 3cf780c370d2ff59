"""The gunicorn worker every component runs: gevent's, sending file bodies with sendfile
(common.sendfile)."""

from __future__ import annotations

from gunicorn.workers.ggevent import GeventWorker

from common import sendfile


class Worker(GeventWorker):
    def init_process(self):
        sendfile.install()
        super().init_process()
