#!/usr/bin/env python3
"""Makes the `btf` target's seed: the real 6.18 BTF (netprobe/testdata/kernels/
6.18/vmlinux.btf.gz) cut down to the structs netprobe looks up and the types
they hold by value (pointers point to void), renumbered, with its own
string table. A few kB instead of 5 MB, so the fuzzer explores member
lookups instead of parsing 100k types per run.

    python3 fuzz/seeds/minimize_btf.py netprobe/testdata/kernels/6.18/vmlinux.btf.gz \
        fuzz/seeds/btf/vmlinux-6.18-min.btf
"""
import gzip
import struct
import sys

ROOTS = ["sk_buff", "sock_common", "sock", "net_device", "net"]
PTR, ARRAY, STRUCT, UNION = 2, 3, 4, 5
FOLLOW = {8, 9, 10, 11, 18}  # typedef, volatile, const, restrict, type_tag


def extra_len(kind, vlen):
    if kind in (1, 14, 17):
        return 4
    if kind == ARRAY:
        return 12
    if kind in (STRUCT, UNION, 15, 19):
        return 12 * vlen
    if kind in (6, 13):
        return 8 * vlen
    return 0


def main(src, dst):
    data = gzip.open(src).read()
    _, _, _, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
    types = [None]  # id -> (name_off, info, size_or_type, extra bytes)
    at, end = hdr_len + type_off, hdr_len + type_off + type_len
    while at < end:
        name_off, info, sot = struct.unpack_from("<III", data, at)
        n = extra_len((info >> 24) & 0x1F, info & 0xFFFF)
        types.append((name_off, info, sot, data[at + 12 : at + 12 + n]))
        at += 12 + n
    strs = data[hdr_len + str_off : hdr_len + str_off + str_len]

    def name(off):
        return strs[off : strs.index(b"\0", off)]

    roots = [
        next(i for i, t in enumerate(types) if t and (t[1] >> 24) & 0x1F == STRUCT and name(t[0]) == r.encode())
        for r in ROOTS
    ]
    order, new_id = [], {0: 0}

    def visit(i):
        if i in new_id:
            return
        new_id[i] = len(order) + 1
        order.append(i)
        _, info, sot, extra = types[i]
        kind = (info >> 24) & 0x1F
        if kind in FOLLOW:
            visit(sot)
        elif kind == ARRAY:
            elem, index, _ = struct.unpack("<III", extra)
            visit(elem)
            visit(index)
        elif kind in (STRUCT, UNION):
            for m in range(len(extra) // 12):
                visit(struct.unpack_from("<III", extra, 12 * m)[1])

    for r in roots:
        visit(r)

    out_strs, str_at = bytearray(b"\0"), {b"": 0}

    def s(off):
        n = name(off)
        if n not in str_at:
            str_at[n] = len(out_strs)
            out_strs.extend(n + b"\0")
        return str_at[n]

    out_types = bytearray()
    for i in order:
        name_off, info, sot, extra = types[i]
        kind = (info >> 24) & 0x1F
        extra = bytearray(extra)
        if kind == PTR:
            sot = 0
        elif kind in FOLLOW:
            sot = new_id[sot]
        elif kind == ARRAY:
            elem, index, n = struct.unpack("<III", extra)
            extra = bytearray(struct.pack("<III", new_id[elem], new_id[index], n))
        elif kind in (STRUCT, UNION):
            for m in range(len(extra) // 12):
                mn, mt, mo = struct.unpack_from("<III", extra, 12 * m)
                struct.pack_into("<III", extra, 12 * m, s(mn), new_id[mt], mo)
        elif kind in (6, 19):  # enum values keep their names
            step = 8 if kind == 6 else 12
            for m in range(len(extra) // step):
                struct.pack_into("<I", extra, step * m, s(struct.unpack_from("<I", extra, step * m)[0]))
        out_types += struct.pack("<III", s(name_off), info, sot) + extra
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(out_types), len(out_types), len(out_strs))
    open(dst, "wb").write(hdr + out_types + out_strs)
    print(f"{dst}: {len(order)} types, {24 + len(out_types) + len(out_strs)} bytes")


main(*sys.argv[1:])
