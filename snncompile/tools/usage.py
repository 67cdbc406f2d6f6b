"""Command-line usage errors in one line (the README's contract: exit 2, one line on stderr).

argparse's own ``error`` prints the whole usage block before the message; ``OneLineParser``
prints only ``snn-compile: error: <message>`` (``--help`` still shows the usage).
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def exit_code(e: SystemExit) -> int:
    """The status a ``SystemExit`` carries (argparse's --help / errors), as ``main`` returns it."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1
