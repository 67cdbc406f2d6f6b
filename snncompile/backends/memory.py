"""Moved to ``snncompile.memory`` (one memory module below the backends); this name stays for
code that imports it from here."""

from snncompile.memory import (  # noqa: F401
    DEFAULT_FRACTION,
    MIN_ROWS,
    SLACK,
    Footprint,
    Pieces,
    available_bytes,
    budget_bytes,
    current_bytes,
    footprint,
    parse_bytes,
    piece_bytes,
    plan_pieces,
    room_bytes,
    run_bytes,
    run_memory,
    too_large_on_oom,
)
