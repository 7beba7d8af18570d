#!/usr/bin/python3
"""Asks a containerd's CRI for its Status over its socket and prints it as JSON.

Usage: cri_status.py SOCKET. The request is runtime.v1's StatusRequest{verbose: true}; the reply's
conditions (RuntimeReady, NetworkReady) and its `info` map (with `config`: the CRI plugin's
configuration as containerd resolved it) are decoded by hand from the protobuf wire format, so
no generated code is needed: only Debian's python3-grpcio.
"""
import json
import sys

import grpc


def varint(buf, i):
    v, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return v, i


def fields(buf):
    """(field number, value) of one protobuf message: ints for varints, bytes for the rest."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = varint(buf, i)
        elif wire == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise SystemExit(f"cri_status.py: unexpected wire type {wire} in field {num}")
        yield num, v


def main():
    channel = grpc.insecure_channel("unix://" + sys.argv[1])
    status = channel.unary_unary("/runtime.v1.RuntimeService/Status")
    reply = status(b"\x08\x01", timeout=20)  # StatusRequest{verbose: true}
    names = {1: "type", 2: "status", 3: "reason", 4: "message"}
    conditions, info = [], {}
    for num, v in fields(reply):
        if num == 1:  # RuntimeStatus
            for n, c in fields(v):
                if n == 1:  # RuntimeCondition
                    d = {"status": False}
                    for k, x in fields(c):
                        d[names.get(k, str(k))] = x.decode() if isinstance(x, bytes) else bool(x)
                    conditions.append(d)
        elif num == 2:  # map<string, string> info
            kv = dict(fields(v))
            value = kv.get(2, b"").decode()
            info[kv.get(1, b"").decode()] = json.loads(value) if value[:1] in "{[" else value
    print(json.dumps({"conditions": conditions, "info": info}))


main()
