#!/usr/bin/env python3
"""Failover probe for bench/store-cluster.sh: kill -9 a store member and time the first
acknowledged write through the survivors.

Usage: failover-probe.py PID GAP_MS TIMEOUT_MS ENDPOINT...   (ENDPOINT: host:port of a survivor)

It opens one gRPC channel to each survivor and checks each with a put, so that no connection is
made after the kill. Then it sends SIGKILL to PID and, every GAP_MS, starts a new etcd v3 Put
(key `failover-probe`) on the next survivor, each with a deadline of TIMEOUT_MS; it stops at the
first Put that succeeds. Prints one JSON line: ms from the kill to that acknowledgement, attempts
started, which attempt succeeded, and the errors seen. The Put is encoded by hand (field 1 key,
field 2 value), so only `grpcio` is needed, no generated stubs.
"""
import json
import os
import signal
import sys
import threading
import time

import grpc


def put_request(key: bytes, value: bytes) -> bytes:
    def field(tag: int, data: bytes) -> bytes:
        n, out = len(data), bytearray([tag])
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out) + data

    return field(0x0A, key) + field(0x12, value)


def main() -> int:
    pid, gap, timeout = int(sys.argv[1]), int(sys.argv[2]) / 1000, int(sys.argv[3]) / 1000
    endpoints = sys.argv[4:]
    puts = []
    for ep in endpoints:
        channel = grpc.insecure_channel(ep)
        put = channel.unary_unary(
            "/etcdserverpb.KV/Put",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        put(put_request(b"failover-probe", b"warm-up"), timeout=10)
        puts.append(put)

    lock = threading.Lock()
    done = threading.Event()
    first = {}
    errors = {}

    def on_done(i, fut):
        now = time.monotonic()
        with lock:
            if fut.exception() is None:
                if "at" not in first:
                    first.update(at=now, attempt=i)
                done.set()
            else:
                code = str(fut.exception().code())
                errors[code] = errors.get(code, 0) + 1

    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    attempt = 0
    while not done.is_set():
        if time.monotonic() - t0 > 120:
            print(json.dumps({"ms": None, "attempts": attempt, "errors": errors}))
            return 1
        fut = puts[attempt % len(puts)].future(
            put_request(b"failover-probe", str(attempt).encode()), timeout=timeout
        )
        fut.add_done_callback(lambda f, i=attempt: on_done(i, f))
        attempt += 1
        done.wait(max(0.0, t0 + attempt * gap - time.monotonic()))
    with lock:
        out = {
            "ms": round((first["at"] - t0) * 1000, 1),
            "attempts": attempt,
            "first_ok_attempt": first["attempt"],
            "errors": dict(errors),
        }
    print(json.dumps(out))
    sys.stdout.flush()
    os._exit(0)  # do not wait for attempts still in flight


if __name__ == "__main__":
    sys.exit(main())
