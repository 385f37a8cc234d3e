#!/usr/bin/env python3
"""A UDP DNS proxy that delays every query and every answer by DELAY/2 ms: an upstream made far
away where the kernel has no netem. Usage: delay_proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_MS
(all on 127.0.0.1). One upstream socket; queries get IDs of the proxy's own, mapped back on
the way out. Stops when killed."""
import asyncio
import itertools
import socket
import sys

LISTEN, UPSTREAM, HALF = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 2000.0


class Front(asyncio.DatagramProtocol):
    def __init__(self):
        self.pending = {}
        self.ids = itertools.cycle(range(65536))
        self.back = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, client):
        if len(data) < 12:
            return
        asyncio.get_running_loop().call_later(HALF, self.forward, data, client)

    def forward(self, data, client):
        new = next(self.ids)
        self.pending[new] = (data[:2], client)
        self.back.sendto(new.to_bytes(2, "big") + data[2:])

    def answer(self, data):
        entry = self.pending.pop(int.from_bytes(data[:2], "big"), None)
        if entry is not None:
            orig, client = entry
            asyncio.get_running_loop().call_later(
                HALF, self.transport.sendto, orig + data[2:], client
            )


class Back(asyncio.DatagramProtocol):
    def __init__(self, front):
        self.front = front

    def datagram_received(self, data, _):
        if len(data) >= 12:
            self.front.answer(data)


def roomy(transport):
    # A burst of queries (or answers) must not overflow the kernel's default buffer of a few
    # hundred datagrams: the proxy would then lose what the servers under test sent it, and
    # measure its own buffer instead of them. SO_RCVBUFFORCE passes the rmem_max cap as root.
    sock = transport.get_extra_info("socket")
    for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
            break
        except OSError:
            continue


async def main():
    loop = asyncio.get_running_loop()
    front_t, front = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", LISTEN))
    back, _ = await loop.create_datagram_endpoint(
        lambda: Back(front), remote_addr=("127.0.0.1", UPSTREAM)
    )
    roomy(front_t)
    roomy(back)
    front.back = back
    await asyncio.Event().wait()


asyncio.run(main())
