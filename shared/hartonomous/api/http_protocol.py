"""uvicorn's HTTP protocol, answering its own 400s as problem+json like the rest of the API.

A request that the HTTP parser refuses (a malformed request line, an invalid header, a head
past the limit) never reaches the application: uvicorn answers it with a plain-text ``400
Invalid HTTP request received.`` and closes the connection. Both of its protocol classes
(httptools and h11) send that answer from one method, ``send_400_response``, which these
subclasses override. The limit on a request's head: h11 refuses an unfinished head past 16 KiB;
httptools has none, so its subclass counts the head and refuses it past 64 KiB.
``hartonomous serve`` passes ``problem_protocol()`` as uvicorn's ``http``.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from hartonomous.api.problems import PROBLEM_JSON, problem_body
from hartonomous.errors import InvalidInput

# The request line and headers together (httptools; h11 bounds an unfinished head at
# 16 KiB itself). Room for a bearer key and a 16 KiB X-Atom-Metadata.
MAX_HEAD_BYTES = 64 * 1024
INVALID = "Invalid HTTP request received."
_HEADERS = [(b"content-type", PROBLEM_JSON.encode()), (b"connection", b"close")]


def _body(msg: str) -> bytes:
    if msg == INVALID:  # uvicorn's words for every refusal of its parser
        msg = "Invalid HTTP request: the request line or a header is malformed or too long."
    return problem_body(InvalidInput(f"{msg} Nothing was read."), None)


class ProblemH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = _body(msg)
        headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            output = self.conn.send(event)
            if output:
                self.transport.write(output)
        self.transport.close()


def problem_protocol() -> type[asyncio.Protocol]:
    """The protocol class uvicorn's ``auto`` would pick (httptools when installed), with
    problem+json 400s."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is not installed: uvicorn's choice is h11 too
        return ProblemH11Protocol

    class ProblemHttpToolsProtocol(HttpToolsProtocol):
        """httptools sets no bound on a request's head (a 20 MB header was served): the
        head is counted here, read by read, and refused past ``max_head_bytes``."""

        max_head_bytes = MAX_HEAD_BYTES
        _head_pending = False
        _head_bytes = 0

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_pending, self._head_bytes = True, 0

        def on_headers_complete(self) -> None:
            self._head_pending = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._head_pending and not self.transport.is_closing():
                self._head_bytes += len(data)
                if self._head_bytes > self.max_head_bytes:
                    self._head_pending = False
                    self.send_400_response(
                        f"The request line and headers exceed {self.max_head_bytes} bytes."
                    )

        def send_400_response(self, msg: str) -> None:
            body = _body(msg)
            head = [b"HTTP/1.1 400 Bad Request\r\n"]
            for name, value in [
                *self.server_state.default_headers,
                *_HEADERS,
                (b"content-length", str(len(body)).encode()),
            ]:
                head += [name, b": ", value, b"\r\n"]
            self.transport.write(b"".join([*head, b"\r\n", body]))
            self.transport.close()

    return ProblemHttpToolsProtocol
