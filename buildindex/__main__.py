from gevent import monkey

monkey.patch_all()

from buildindex import cmd  # noqa: E402

cmd.main()
