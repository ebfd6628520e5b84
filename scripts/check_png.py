#!/usr/bin/env python3
"""Independent check of forkring's image: decode image.png with Pillow (not
the Rust png crate forkring writes with) and count its distinct colours.

usage: check_png.py IMAGE.png WIDTH HEIGHT [DISTINCT]
Exits non-zero, naming what is wrong, unless the PNG decodes to WIDTH x HEIGHT
RGB pixels with DISTINCT distinct colours (default WIDTH*HEIGHT).
"""
import sys

import numpy as np
from PIL import Image


def main() -> int:
    if len(sys.argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    path, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    want = int(sys.argv[4]) if len(sys.argv) == 5 else w * h
    img = Image.open(path)
    img.load()
    if img.mode != "RGB":
        print(f"{path}: mode {img.mode}, expected RGB", file=sys.stderr)
        return 1
    if img.size != (w, h):
        print(f"{path}: {img.size[0]}x{img.size[1]}, expected {w}x{h}", file=sys.stderr)
        return 1
    rgb = np.asarray(img, dtype=np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    distinct = np.unique(packed).size
    if distinct != want:
        print(f"{path}: {distinct} distinct colours, expected {want}", file=sys.stderr)
        return 1
    print(f"{path}: {w}x{h} RGB, {distinct} distinct colours (decoded by Pillow {Image.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
