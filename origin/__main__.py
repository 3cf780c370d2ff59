from gevent import monkey

monkey.patch_all()

from origin import cmd  # noqa: E402

cmd.main()
