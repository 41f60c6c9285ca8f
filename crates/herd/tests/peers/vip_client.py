#!/usr/bin/python3
"""A client that asks HOST:PORT for "GET /" over and over and logs every attempt:
`start end ok` (seconds since the epoch, 1 = an HTTP answer arrived). Runs for DURATION s."""
import socket
import sys
import time

host, port, out, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
end = time.time() + duration
with open(out, "w", buffering=1) as f:
    while time.time() < end:
        t0 = time.time()
        ok = False
        try:
            s = socket.create_connection((host, port), timeout=0.1)
            s.settimeout(0.3)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            ok = s.recv(64).startswith(b"HTTP/1")
            s.close()
        except OSError:
            pass
        f.write(f"{t0:.4f} {time.time():.4f} {int(ok)}\n")
        time.sleep(0.01)
