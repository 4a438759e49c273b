"""The stage contract: what every stage of `atlas build` is, and the three shapes a stage comes in.

A stage is an object with
  name                 its cache folders are CACHE/<name>-<key>/ (per layer: <name>-LL-<key>/)
  wanted(build)        whether this build runs it (default: always)
  check(build)         refuses what it cannot run with, once the plan is made and before any other stage runs
  key(build)           a hash of its inputs, its parameters and the keys of the stages it reads
  run(build, tmp)      computes its outputs into the private folder tmp (made whole, then renamed into place)
  read(folder)         its outputs, typed: what every later reader (later stages, export, the summary) gets

`build` is the Builder (build.py): the configuration, the checked inputs, and `build.results[name]`, the
read() result of every stage that ran before. A stage reads other stages only through those results, never
by opening their files, and nothing outside a stage opens its files.

Shapes: Stage (one folder), LayerStage (one folder per layer or per adjacent pair of layers, each with its own
key, so that a changed layer recomputes alone) and MapStage (a map over shards or tasks run by the engine,
each unit committed on its own so that a killed build resumes at the first unfinished unit, then finish()).
build.py keeps the list of stages and runs them in order; adding a stage is one module and one line there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import Builder


class Stage:
    name: str = ""

    def wanted(self, b: Builder) -> bool:
        return True

    def check(self, b: Builder) -> None:
        """Refuse settings this stage cannot run with, before any expensive stage (the plan is made by then)."""

    def key(self, b: Builder) -> str:
        raise NotImplementedError

    def run(self, b: Builder, tmp: Path) -> None:
        raise NotImplementedError

    def read(self, folder: Path) -> Any:
        raise NotImplementedError

    def make(self, b: Builder) -> Any:
        """Its folder from the cache, computed first if absent; then read."""
        return self.read(b.cached(self.name, self.key(b), lambda tmp: self.run(b, tmp)))


def folder_key(folder: Path) -> str:
    """The cache key a stage folder is named by (CACHE/<name>[-LL]-<key>/)."""
    return Path(folder).name.rpartition("-")[2]


def unit_tag(unit: tuple[int, ...]) -> str:
    """Folder tag of a layer (LL) or an adjacent pair (LL-MM)."""
    return "-".join(f"{L:02d}" for L in unit)


class LayerStage(Stage):
    """One folder per unit: a layer (L,) or an adjacent pair (a, b). read() of the stage gives {unit: result}
    (keyed by the layer number for single layers)."""

    def units(self, b: Builder) -> list[tuple[int, ...]]:
        return [(L,) for L in b.layers]

    def key(self, b: Builder, unit: tuple[int, ...]) -> str:
        raise NotImplementedError

    def run(self, b: Builder, unit: tuple[int, ...], tmp: Path) -> None:
        raise NotImplementedError

    def make(self, b: Builder) -> dict:
        out = {}
        for u in self.units(b):
            folder = b.cached(f"{self.name}-{unit_tag(u)}", self.key(b, u), lambda tmp, u=u: self.run(b, u, tmp))
            out[u[0] if len(u) == 1 else u] = self.read(folder)
        return out


class MapStage(Stage):
    """A map over units run by the engine: worker(**kwargs(build, folder))(i) commits unit i's folder (units(build)
    gives each one's folder under the stage folder and its gene tokens, for progress); then finish(build, folder)."""

    worker: type
    unit = "shards"

    def units(self, b: Builder) -> list[tuple[str, int]]:
        raise NotImplementedError

    def kwargs(self, b: Builder, folder: Path) -> dict:
        raise NotImplementedError

    def finish(self, b: Builder, folder: Path) -> None:
        pass

    def on_unit(self, b: Builder, folder: Path) -> None:
        """After each finished unit, in the driver (the stream folds its sums here)."""

    def make(self, b: Builder) -> Any:
        key = self.key(b)
        folder = b.cache / f"{self.name}-{key}"
        return self.read(b.mapped(self.name, key, self.worker, self.kwargs(b, folder), self.units(b),
                                  lambda out: self.finish(b, out), unit=self.unit,
                                  on_unit=lambda: self.on_unit(b, folder)))
