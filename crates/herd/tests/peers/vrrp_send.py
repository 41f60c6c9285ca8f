#!/usr/bin/python3
"""Sends hand-made VRRP packets to 224.0.0.18 (or ff02::12 when VIP is IPv6) from SRC (for
IPv6: the sender's link-local address on eth0): one of each kind of bad packet (short, wrong
version, wrong TTL, bad checksum, unknown VRID), then a good advert of VRID with priority 1
(a master of priority 1 is outranked: harmless).

Optional: DST sends everything to that unicast address instead of the group, and PRIORITY gives
the good advert that priority (a stranger claiming the VIP: unicast-peers must drop it).

Usage: vrrp_send.py SRC VRID VIP [DST [PRIORITY]]"""
import socket
import struct
import sys

src, vrid, vip = sys.argv[1], int(sys.argv[2]), sys.argv[3]
V6 = ":" in vip
GROUP = "ff02::12" if V6 else "224.0.0.18"
if len(sys.argv) > 4:
    GROUP = sys.argv[4]
PRIORITY = int(sys.argv[5]) if len(sys.argv) > 5 else 1
FAMILY = socket.AF_INET6 if V6 else socket.AF_INET


def addr(a):
    return socket.inet_pton(FAMILY, a)


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def advert(version=3, vrid=vrid, prio=1, good_sum=True):
    body = struct.pack("!BBBBH", version << 4 | 1, vrid, prio, 1, 10) + b"\0\0" + addr(vip)
    if V6:
        pseudo = addr(src) + addr(GROUP) + struct.pack("!IxxxB", len(body), 112)
    else:
        pseudo = addr(src) + addr(GROUP) + struct.pack("!BBH", 0, 112, len(body))
    c = csum(pseudo + body)
    if not good_sum:
        c ^= 0x5555
    return body[:6] + struct.pack("!H", c) + body[8:]


s = socket.socket(FAMILY, socket.SOCK_RAW, 112)
if V6:
    index = socket.if_nametoindex("eth0")
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
else:
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(src))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)


def send(pkt, ttl=255):
    if V6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
        # The source the checksum covers, pinned.
        info = addr(src) + struct.pack("=I", index)
        s.sendmsg([pkt], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)], 0, (GROUP, 0, 0, index))
    else:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        s.sendto(pkt, (GROUP, 0))


send(b"\x31\x01\x02")  # short
send(advert(version=4))  # wrong version (checksum right)
send(advert(), ttl=64)  # routed: TTL not 255
send(advert(good_sum=False))  # bad checksum
send(advert(vrid=(vrid % 255) + 1))  # no instance with this VRID
send(advert(prio=PRIORITY))  # good
