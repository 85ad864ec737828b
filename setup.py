"""Build hook: the CRDs go into the wheel as `ascend_mlops/crds/`.

Everything else is configured in pyproject.toml. The CRDs have one source,
`crds/` at the top of the repository (the chart gets its copy from
scripts/sync-crds.sh); setuptools' package data cannot reach outside the
package, so `build_py` copies them into the build tree instead of keeping a
second copy in git. The sandbox finds them there (`ascend_mlops/crds/`, a
parent of its own module). Editable installs read `crds/` in place and need no copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CRDS = Path(__file__).resolve().parent / "crds"


class build_py_with_crds(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        sources = sorted(CRDS.glob("*.yaml"))
        if not sources:
            # A build from a tree without crds/ (e.g. an image build context holding only operator/):
            # the package works, only `ascend-mlops sandbox` will not find the CRDs.
            self.warn(f"no CRDs in {CRDS}: the wheel will not carry ascend_mlops/crds/")
            return
        target = Path(self.build_lib) / "ascend_mlops" / "crds"
        target.mkdir(parents=True, exist_ok=True)
        for source in sources:
            shutil.copyfile(source, target / source.name)


setup(cmdclass={"build_py": build_py_with_crds})
