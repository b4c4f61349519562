"""``python -m outlay ...``: the ``outlay`` command, for when its script is not on ``PATH``."""

from outlay.cli import main

if __name__ == "__main__":  # not on import (pkgutil walks, tools that import every module)
    main(prog_name="outlay")
