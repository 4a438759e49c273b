"""Round trips each cold view needs before its first meaningful paint, from a sitebench results file.

    python bench/round_trips.py bench/out/scgpt-fast3g.json [...]

Requests are grouped by when they were sent: under Fast 3G each round trip costs 150 ms, so a request sent
more than half of that after the previous one waited for an earlier response and starts a new round trip.
Counted from the document request to the first mark of the view's first step (its first meaningful content)."""

import json
import sys

GAP_S = 0.075


def round_trips(result: dict) -> list[list[str]]:
    reqs = sorted(result["requests"], key=lambda r: r["wall"])
    t0 = reqs[0]["wall"]
    marks = [v for v in result["steps"][0]["marks"].values() if isinstance(v, (int, float))]
    first = min(marks) / 1000 if marks else float("inf")
    waves, last = [], None
    for r in reqs:
        if r["wall"] - t0 > first:
            break
        if last is None or r["wall"] - last > GAP_S:
            waves.append([])
        waves[-1].append(r["url"].rstrip("/").rsplit("/", 1)[-1])
        last = r["wall"]
    return waves


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(path)
        for res in json.load(open(path))["results"]:
            waves = round_trips(res)
            print(f"  {res['scenario']:26s} {len(waves)}  " + " | ".join(", ".join(w) for w in waves))
