"""The main job: what the margins buy on unseen identities, or the digits demo without CJK fonts.

    python examples/demo.py            # open-set glyph benchmark, quick setting (CJK fonts)
    python examples/demo.py --digits   # the no-install fallback: scikit-learn's digits

With at least two CJK font designs installed (``make fonts``: Debian/Ubuntu packages, needs
root), this runs ``benchmarks/open_set.py --quick``: Softmax, CosFace and ArcFace train the same
small CNN on 500 CJK characters (identities) rendered in every installed font design with
photo-like augmentation, then are measured on 300 unseen characters (10-fold verification
accuracy, VAL@FAR, 1:N identification, angle statistics). It writes
``out/open_set_quick.md``. Without CJK fonts (a fresh machine with only Python and pip) it says
so and runs ``examples/train_digits.py`` on scikit-learn's bundled digits instead, which needs
no download (and, with 7 training identities of 8x8 pixels, cannot show what the margins buy).
Extra arguments go to the script that runs.
"""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MIN_FONT_DESIGNS = 2


def font_designs() -> int:
    """How many distinct CJK font designs this machine has (0 without Pillow or fonts)."""
    try:
        from keras_facemargin.data.glyphs import find_cjk_fonts
        return len(find_cjk_fonts())
    except (ImportError, OSError):
        return 0


def command(argv: list[str]) -> list[str]:
    """The command line of the job to run for ``argv`` on this machine."""
    if "--digits" in argv:
        argv = [a for a in argv if a != "--digits"]
        return [sys.executable, os.path.join(HERE, "train_digits.py"), *argv]
    designs = font_designs()
    if designs < MIN_FONT_DESIGNS:
        print(f"demo: {designs} CJK font design(s) found, the open-set glyph benchmark needs at "
              f"least {MIN_FONT_DESIGNS} (`make fonts` installs them on Debian/Ubuntu as root). "
              "Running the digits demo instead (examples/train_digits.py).", file=sys.stderr,
              flush=True)
        return [sys.executable, os.path.join(HERE, "train_digits.py"), *argv]
    out = [] if "--out" in argv else ["--out", os.path.join("out", "open_set_quick.md")]
    if out:
        os.makedirs("out", exist_ok=True)
    return [sys.executable, os.path.join(ROOT, "benchmarks", "open_set.py"), "--quick", *out,
            *argv]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return subprocess.call(command(argv))


if __name__ == "__main__":
    raise SystemExit(main())
