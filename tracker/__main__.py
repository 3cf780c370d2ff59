from gevent import monkey

monkey.patch_all()

from tracker import cmd  # noqa: E402

cmd.main()
