"""Runs a component's Flask app under gunicorn from Python, so that `python -m tracker
--config f.yaml` and a plain `gunicorn -c tracker/gunicorn.conf.py` deployment behave alike.

The app is built in the worker, after the fork: agent and origin own a libtorrent session,
whose threads must not be created in the master.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from gunicorn.app.base import Application

log = logging.getLogger(__name__)


class _App(Application):
    def __init__(self, factory: Callable, conf_file: Path, options: dict):
        self._factory = factory
        self._conf_file = conf_file
        self._options = options
        super().__init__()

    def load_config(self):
        self.load_config_from_file(str(self._conf_file))
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self):
        app = self._factory()
        stop = getattr(app, "kraken_shutdown", None)
        if stop is not None:
            previous = self.cfg.worker_exit

            def _worker_exit(server, worker):
                try:
                    stop()
                finally:
                    previous(server, worker)

            self.cfg.set("worker_exit", _worker_exit)
        return app


def run(factory: Callable, conf_file: Path, binds: Sequence[str], **options) -> None:
    """Serves `factory()` on `binds` with the settings in `conf_file` (worker class, counts,
    timeouts), which options override."""
    options = {"bind": list(binds), **options}
    _App(factory, conf_file, options).run()


def parse_args(component: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {component}", description=f"kraken-p2p {component}")
    parser.add_argument("--config", help="YAML config file (defaults apply when omitted)")
    return parser.parse_args(argv)


def main(component: str, config_cls, build_app: Callable, conf_file: Path, argv=None,
         binds: Callable[[object], Sequence[str]] | None = None) -> None:
    """`python -m <component> --config f.yaml`: load config, set up logging, serve on
    `binds(cfg)` (default: the `server` section's address)."""
    from common import config as configlib
    from common import log as logsetup

    args = parse_args(component, argv)
    cfg = configlib.load(config_cls, args.config)
    logsetup.setup(component, cfg.log.level)
    addrs = binds(cfg) if binds is not None else [cfg.server.addr]
    run(lambda: build_app(cfg), conf_file, addrs, **cfg.server.gunicorn)


def app_from_env(component: str, config_cls, build_app: Callable):
    """For `gunicorn -c <component>/gunicorn.conf.py '<component>.cmd:app_from_env()'` with
    KRAKEN_CONFIG naming the YAML file (deployments behind nginx)."""
    import os

    from common import config as configlib
    from common import log as logsetup

    cfg = configlib.load(config_cls, os.environ.get("KRAKEN_CONFIG"))
    logsetup.setup(component, cfg.log.level)
    return build_app(cfg)
