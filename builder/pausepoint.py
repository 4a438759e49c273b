"""Named pause points, for tests of signals and concurrency.

With ATLAS_PAUSE_AT=POINT and ATLAS_PAUSE_FILE=PATH in its environment, a process that reaches POINT writes its
pid to PATH and waits there until PATH is removed (or a signal ends it). A test can then interrupt, kill or race
the process at a known moment instead of polling for a temporary folder and hoping the process is still there,
which fails under load. Unset (always, outside tests), a pause point costs one environment lookup.

Points: `swap NAME` (an output folder NAME is complete, about to be swapped in), `swapped NAME` (just swapped in),
`STAGE unit N` (a map stage's N-th unit is committed), `build locked` (a build holds its cache lock),
`atlas held NAME` (an update of atlas NAME holds it, before reading it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def pause_at(point: str) -> None:
    if os.environ.get("ATLAS_PAUSE_AT") != point:
        return
    marker = Path(os.environ["ATLAS_PAUSE_FILE"])
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, marker)  # the test sees the file whole or not at all
    while marker.exists():
        time.sleep(0.01)
