#!/usr/bin/env python3
"""What `qm guest exec VMID -- PROGRAM ARGS...` prints on a Proxmox VE node, from a guest agent socket.

    tests/vm/qm-guest-exec.py SOCKET PROGRAM [ARGS...]

Independent of guestprep: it speaks the QEMU guest agent protocol itself (guest-sync-delimited,
guest-exec with capture-output, guest-exec-status polled once a second, as qm does) and shapes
the answer as Proxmox's qemu-server does (src/PVE/QemuServer/Agent.pm, qemu_exec_status: out-data
and err-data base64-decoded, JSON booleans turned into 1/0; src/PVE/CLI/qm.pm, $print_agent_result:
to_json pretty and canonical). So docs/integrations.md's jq pipeline runs on the same bytes it
would get on a node.
"""
import base64
import json
import random
import socket
import sys
import time


def main():
    path, argv = sys.argv[1], sys.argv[2:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    f = s.makefile("rwb", buffering=0)

    def answer(command, tolerate_errors=False):
        while True:
            line = f.readline()
            if not line:
                raise SystemExit(f"qm-guest-exec: the agent closed the connection during {command}")
            line = line.lstrip(b"\xff").strip()
            if not line:
                continue
            msg = json.loads(line)
            if "error" in msg and not tolerate_errors:
                raise SystemExit(f"qm-guest-exec: {command}: {msg['error']}")
            if "return" in msg:
                return msg["return"]

    def call(command, arguments=None):
        req = {"execute": command}
        if arguments is not None:
            req["arguments"] = arguments
        f.write(json.dumps(req).encode() + b"\n")
        return answer(command)

    # guest-sync-delimited with a fresh id; the 0xFF byte resets the agent's parser (it may answer
    # it with a parse error) and precedes the answer; whatever comes before our id is skipped.
    sync_id = random.randrange(1, 2**31)
    f.write(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": sync_id}}).encode() + b"\n")
    while answer("guest-sync-delimited", tolerate_errors=True) != sync_id:
        pass
    pid = call("guest-exec", {"path": argv[0], "arg": argv[1:], "capture-output": True})["pid"]
    deadline = time.monotonic() + 30  # qm guest exec's default --timeout
    while True:
        res = call("guest-exec-status", {"pid": pid})
        if res.get("exited") or time.monotonic() > deadline:
            break
        time.sleep(1)
    for key in ("out-data", "err-data"):
        if res.get(key):
            res[key] = base64.b64decode(res[key]).decode("utf-8", "replace")
    for key, value in list(res.items()):
        if isinstance(value, bool):
            res[key] = 1 if value else 0
    print(json.dumps({"result": res}["result"], indent=3, sort_keys=True))


if __name__ == "__main__":
    main()
