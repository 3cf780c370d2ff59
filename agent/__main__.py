from gevent import monkey

monkey.patch_all()

from agent import cmd  # noqa: E402

cmd.main()
