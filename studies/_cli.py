"""What every ``studies/`` script does with bad input: one line (``error: ...``) on stderr
and exit status 2, never a traceback (DataError and ConfigError are ValueErrors; a study or
run that is not there is a LookupError)."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run(main: Callable[[], int | None]) -> int:
    """``main()``'s exit status, or 2 after printing its bad-input error as one line."""
    try:
        return main() or 0
    except (ValueError, LookupError, OSError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
