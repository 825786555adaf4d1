"""Writes cnet_hint.png for sd15_controlnet_256.json: a 256×256 white circle outline and
a bar on black, like a Canny edge map (stdlib only: python3 make_hint.py OUT.png)."""
import struct
import sys
import zlib


def pixel(x, y):
    d = (x - 128) ** 2 + (y - 120) ** 2
    on = 70 ** 2 <= d <= 73 ** 2 or (40 <= x <= 216 and 220 <= y <= 223)
    return (255, 255, 255) if on else (0, 0, 0)


def main(path, w=256, h=256):
    raw = b"".join(b"\x00" + bytes(c for x in range(w) for c in pixel(x, y)) for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


if __name__ == "__main__":
    main(sys.argv[1])
