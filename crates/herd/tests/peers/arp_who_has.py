#!/usr/bin/python3
"""Asks the LAN on eth0 who has IP (one broadcast ARP request) and prints the MAC of every
host that answers within half a second, one per line."""
import socket
import struct
import subprocess
import sys
import time

ip = socket.inet_aton(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(("eth0", 0))
mac = s.getsockname()[4]
shown = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"], capture_output=True, text=True)
me = socket.inet_aton(shown.stdout.split()[3].split("/")[0])
arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + me + b"\0" * 6 + ip
s.send(b"\xff" * 6 + mac + struct.pack("!H", 0x0806) + arp)
s.settimeout(0.1)
seen = set()
end = time.time() + 0.5
while time.time() < end:
    try:
        f = s.recv(128)
    except socket.timeout:
        continue
    op, sender_ip = struct.unpack("!H", f[20:22])[0], f[28:32]
    if op == 2 and sender_ip == ip:
        seen.add(f[22:28].hex(":"))
for m in sorted(seen):
    print(m)
