from gevent import monkey

monkey.patch_all()

from proxy import cmd  # noqa: E402

cmd.main()
