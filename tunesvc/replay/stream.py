"""One large JSON object read as a stream of bounded pieces, each parsed by the standard library.

A Kernel Tuner cache file is one object whose ``cache`` member holds every config it ran; a T4
file's ``results`` array does. Parsed whole, a 2.7 MB ``.json.gz`` that unpacks to 477 MB took
7.8 GB. Here the text is decoded a block at a time and ``json``'s own scanner
(``JSONDecoder.raw_decode``) parses one member of the top-level object, or one element of a
streamed member, at a time: memory stays within a block and one piece (``max_piece`` characters),
whatever the size of the file, and what a piece may hold is exactly what ``json.loads`` allows.
(A streaming parser built on yajl, such as ijson, took 6 minutes for one 200 MB string: it grows
its token buffer piece by piece; it also reads a lone surrogate escape as '?'.)
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Iterator, Protocol

#: the most characters one member or element may take (a Kernel Tuner entry is about 500)
MAX_PIECE = 1 << 20
_BLOCK = 1 << 20
_WS = re.compile(r"[ \t\n\r]*")
_DELIMITER = re.compile(r"[ \t\n\r,:\]}]")
# the common cases in one step each (a name without escapes and its colon; a separator): a cache file
# holds a name and a separator per entry, and the general path costs a few calls each
_NAME = re.compile(r'[ \t\n\r]*"([^"\\\x00-\x1f]*)"[ \t\n\r]*:')
_SEPARATOR = re.compile(r"[ \t\n\r]*([,}\]])")
_decoder = json.JSONDecoder()


class Readable(Protocol):
    """A binary stream (a file, a gzip file, BytesIO)."""

    def read(self, size: int = -1, /) -> bytes: ...


class JSONStreamError(ValueError):
    """The stream is not one readable JSON object; the message says why and where."""


class NotAnObject(JSONStreamError):
    """The stream holds JSON, but not an object at the top."""


class _Text:
    """The decoded text of a binary stream, one block at a time, from the first unconsumed character."""

    def __init__(self, stream: Readable, max_piece: int):
        self.stream, self.max_piece = stream, max_piece
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text, self.pos, self.eof, self.dropped = "", 0, False, 0

    def where(self) -> str:
        return f"at character {self.dropped + self.pos}"

    def more(self) -> bool:
        """Read one more block, dropping the text before ``pos``; False once the stream has ended."""
        if self.eof:
            return False
        block = self.stream.read(_BLOCK)
        try:
            new = self.decoder.decode(block, final=not block)
        except UnicodeDecodeError:
            raise JSONStreamError(f"not UTF-8 text (near character {self.dropped + len(self.text)})") from None
        self.dropped += self.pos
        self.text = self.text[self.pos:] + new
        self.pos, self.eof = 0, not block
        return True

    def peek(self) -> str:
        """The next character that is not white space, left unconsumed ('' at the end of the stream)."""
        while True:
            self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]  # it matches anywhere
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""

    def expect(self, chars: str, what: str) -> str:
        c = self.peek()
        if not c or c not in chars:
            raise JSONStreamError(f"expected {what} {self.where()}, found {c[:1]!r}" if c else f"ends before {what}")
        self.pos += 1
        return c

    def value(self):
        """The JSON value that starts at the next character, parsed and consumed."""
        self.peek()
        if self.text[self.pos:self.pos + 1] not in ("{", "[", '"'):
            # a number or a literal ends where a delimiter follows: "0." at the end of a block may be "0.5"
            while not self.eof and not _DELIMITER.search(self.text, self.pos):
                if len(self.text) - self.pos > self.max_piece:
                    raise JSONStreamError(f"a value longer than {self.max_piece} characters {self.where()}")
                self.more()
        while True:
            try:
                obj, end = _decoder.raw_decode(self.text, self.pos)
                self.pos = end
                return obj
            except json.JSONDecodeError as e:
                if self.eof or len(self.text) - self.pos > self.max_piece:
                    raise JSONStreamError(f"{e.msg} (character {self.dropped + e.pos}), or a value longer than "
                                          f"{self.max_piece} characters") from None
            except RecursionError:
                raise JSONStreamError(f"nested too deeply {self.where()}") from None
            except ValueError as e:  # a number of more digits than int() reads
                raise JSONStreamError(f"{str(e).split(':')[0][:80]} {self.where()}") from None
            self.more()


def members(stream: Readable, streamed=frozenset(), max_piece: int = MAX_PIECE) -> Iterator[tuple]:
    """Yield ``(key, None, value)`` for each member of the JSON object in ``stream``, in order; a member
    named in ``streamed`` whose value is an object or an array comes as ``(key, name or index, value)``
    per element instead. An object streamed this way may end where Kernel Tuner's reader closes it
    itself: after its '{' (the header of a run stopped before its first entry), after a whole entry
    or after the comma that follows one (an interrupted run). Raises JSONStreamError."""
    text = _Text(stream, max_piece)
    first = text.peek()
    if first != "{":
        if not first:
            raise JSONStreamError("empty: no JSON value")
        text.value()  # JSON of another kind is said as such; anything else fails to parse here
        raise NotAnObject("holds JSON, but not an object")
    text.pos += 1
    if text.peek() == "}":
        text.pos += 1
    else:
        while True:
            key = _name(text)
            if key in streamed and text.peek() in "{[":
                if (yield from _elements(text, key)):
                    return  # an interrupted Kernel Tuner file: the stream ended inside its last member
            else:
                yield key, None, text.value()
            if _separator(text, ",}", "',' or '}'") == "}":
                break
    if text.peek():
        raise JSONStreamError(f"more data after the JSON object {text.where()}")


def _name(text: _Text) -> str:
    """A member name and the colon after it, consumed."""
    m = _NAME.match(text.text, text.pos)
    if m:
        text.pos = m.end()
        return m.group(1)
    if text.peek() != '"':  # the general path: escapes, or a name that goes on in the next block
        raise JSONStreamError(f"expected a member name in double quotes {text.where()}")
    key = text.value()
    text.expect(":", "':'")
    return key


def _separator(text: _Text, chars: str, what: str) -> str:
    m = _SEPARATOR.match(text.text, text.pos)
    if m and m.group(1) in chars:
        text.pos = m.end()
        return m.group(1)
    return text.expect(chars, what)


def _elements(text: _Text, key: str):
    """Yield the elements of the streamed member ``key``; True if the stream ended after a comma in it."""
    is_object = text.expect("{[", "'{' or '['") == "{"
    close = "}" if is_object else "]"
    after = text.peek()
    if after == close or is_object and not after:  # empty: said as a plain member, so the reader knows it was there
        text.pos += bool(after)
        yield key, None, {} if is_object else []
        return not after  # Kernel Tuner's header alone: the stream ended before the first entry
    index = 0
    while True:
        name = _name(text) if is_object else index
        yield key, name, text.value()
        index += 1
        if is_object and not text.peek():
            return True  # ended after a whole entry, as Kernel Tuner reads it (it closes the object itself)
        if _separator(text, "," + close, f"',' or '{close}'") == close:
            return False
        if is_object and not text.peek():
            return True
