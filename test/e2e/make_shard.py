"""Writes the bytes of a text file as an llm.c token shard (uint16, v1)."""
import struct
import sys

data = open(sys.argv[1], "rb").read()
header = [0] * 256
header[0], header[1], header[2] = 20240520, 1, len(data)
with open(sys.argv[2], "wb") as f:
    f.write(struct.pack("<256i", *header))
    f.write(struct.pack("<%dH" % len(data), *data))
