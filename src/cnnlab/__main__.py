import sys

from cnnlab.cli import main

code = main()
# a torchrun rank leaves without the interpreter's teardown (see cnnlab.engine.distributed);
# looked up, not imported: only a command that trained has loaded it (and torch)
if "cnnlab.engine.distributed" in sys.modules:
    sys.modules["cnnlab.engine.distributed"].exit_process(code)
raise SystemExit(code)
