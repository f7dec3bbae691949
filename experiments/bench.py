"""Performance benchmark (see spikeff/bench.py): ``python experiments/bench.py [--quick] [--out PATH]``.

Same as ``spikeff bench``. On machines where OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set, unset both
in the benchmark's own command to let OpenBLAS pick its native kernel, e.g.
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python experiments/bench.py``; the JSON records the
kernel that ran (threadpoolctl architecture).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spikeff.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
