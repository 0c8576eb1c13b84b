"""Baseline for bench/runtime/run.sh: a minimal asyncio HTTP/1.1 server.

    /usr/bin/python3 baseline-python.py [PORT]   prints "listening on http://127.0.0.1:PORT"

asyncio.Protocol, keep-alive, pipelining, TCP_NODELAY, standard library
only. It parses just enough of a request to find its end (head, then
Content-Length bytes of body) and whether the client asked to close.
Chunked request bodies are not supported (wrk never sends them).
"""
import asyncio
import socket
import sys

BODY = b"Hello, World!"
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY))


class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""
        self.skip = 0  # body bytes of the current request still to discard
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        buf = self.buf + data if self.buf else data
        out = []
        close = False
        while True:
            if self.skip:
                n = min(self.skip, len(buf))
                buf, self.skip = buf[n:], self.skip - n
                if self.skip:
                    break
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head, buf = buf[:end], buf[end + 4:]
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    self.skip = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            out.append(RESPONSE)
            if close:
                break
        self.buf = buf
        if out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
        if close:
            self.transport.close()


async def serve(port):
    server = await asyncio.get_running_loop().create_server(Http, "127.0.0.1", port)
    print("listening on http://127.0.0.1:%d" % server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
