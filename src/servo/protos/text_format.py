"""Protobuf's text format, refused where and as protobuf's C++ parser refuses it.

TFS reads its config files with `TextFormat::ParseFromString` (`util/proto_util.h`,
ParseProtoTextFile), whose parser logs each error before TFS answers "Invalid protobuf file":

    Error parsing text-format tensorflow.serving.ModelServerConfig: 1:12: Message type
    "tensorflow.serving.ModelServerConfig" has no field named "improperly".

(`ReportErrorImpl` in protobuf's `text_format.cc`: the root message's full name, then the
line and column, both from 1, of the token the parser was looking at, then the message.)
Python's parser words and places its errors otherwise (`1:1 : Message type ...`), so this
module reads the text as the C++ parser does (`_Checker`: its tokenizer, `io/tokenizer.cc`,
and its `ParserImpl`, ported for what decides an error: tokens, columns with tabs of 8, field
lookups, values and their ranges, repeated singular fields, oneofs, Any and extension
names) and, when that finds no error, builds the message with Python's parser. Message names
are written as TFS's (`tfs_names`: servo's `servo.tensorflow.*` are TFS's `tensorflow.*`).

Like the C++ parser, a tokenizer error (a bad escape, an unterminated string, a control
character) is recorded and the parse goes on, and the first parser error ends it, so a text
may have several error lines. `parse` logs them, as protobuf does (and its warnings, for a
deprecated field), and raises `TextFormatError`; `parse_file_text` raises
`InvalidProtobufFile`, TFS's status.
"""

from __future__ import annotations

import logging
import math
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf import descriptor_pb2
from google.protobuf import text_format as _python_text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from servo.protos import tfs_names

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

# The C++ tokenizer's token types.
_START, _END, _IDENTIFIER, _INTEGER, _FLOAT, _STRING, _SYMBOL, _WHITESPACE, _URL_CHARS = range(9)

_TAB_WIDTH = 8
_WHITESPACE_CHARS = frozenset(b" \t\n\v\f\r")
_DIGITS = frozenset(b"0123456789")
_OCTAL = frozenset(b"01234567")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_LETTERS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_ALPHANUMERIC = _LETTERS | _DIGITS
_ESCAPES = frozenset(b"abfnrtv\\?'\"")
_URL_CHARS = _ALPHANUMERIC | frozenset(b"-.~!$&()*+,;=%/")

_INT32_MAX = 2**31 - 1
_UINT32_MAX = 2**32 - 1
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1
_FLOAT_MAX = 3.4028234663852886e38
# servo's parser recurses per nested message (the C++ one has no limit by default).
MAX_DEPTH = 200


@dataclass(frozen=True, slots=True)
class ParseErrorItem:
    """One error of the C++ parser: its line and column from 0 (-1: no place), its words."""

    line: int
    column: int
    message: str


class TextFormatError(ValueError):
    """Text that protobuf's C++ parser refuses; `lines` are the lines it logs."""

    def __init__(self, type_name: str, errors: list[ParseErrorItem]) -> None:
        self.type_name = type_name
        self.errors = errors
        super().__init__("\n".join(self.lines))

    @property
    def lines(self) -> list[str]:
        """`Error parsing text-format TYPE: LINE:COLUMN: MESSAGE`, one per error."""
        return [
            f"Error parsing text-format {self.type_name}: {e.line + 1}:{e.column + 1}: {e.message}"
            if e.line >= 0
            else f"Error parsing text-format {self.type_name}: {e.message}"
            for e in self.errors
        ]


class InvalidProtobufFile(ValueError):
    """A file whose text protobuf's parser refused: the message is TFS's status text
    (`Invalid protobuf file: '<path>'`); `lines` are the parser's lines, logged before."""

    def __init__(self, path: str, error: TextFormatError) -> None:
        self.path = path
        self.error = error
        self.lines = error.lines
        super().__init__(f"Invalid protobuf file: '{path}'")

    @property
    def status(self) -> str:
        """TFS's status as absl prints it: `INVALID_ARGUMENT: Invalid protobuf file: ...`."""
        return f"INVALID_ARGUMENT: {self}"

    @property
    def detail(self) -> str:
        """The status text and the parser's first line, for a reader who sees no log."""
        return f"{self}: {self.lines[0]}" if self.lines else str(self)


def tfs_type_name(descriptor: Descriptor) -> str:
    """A message type's full name as TFS's protos have it."""
    return tfs_names(f'"{descriptor.full_name}"')[1:-1]


def parse(text: str | bytes, message: M) -> M:
    """Parses `text` into `message` (cleared first), refusing what protobuf's C++ parser
    refuses; logs the lines that parser logs (its warnings, and its errors at ERROR) and
    raises `TextFormatError` with the error lines."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    checker = _check(data, message.DESCRIPTOR)
    type_name = tfs_type_name(message.DESCRIPTOR)
    _log_warnings(type_name, checker.warnings)
    if checker.errors:
        raise _logged(TextFormatError(type_name, checker.errors))
    try:
        _python_text_format.Parse(
            text if isinstance(text, str) else data.decode("utf-8", "replace"), message
        )
    except _python_text_format.ParseError as exc:
        # What the C++ parser takes and Python's does not: Python's words, TFS's form.
        line, column = exc.GetLine(), exc.GetColumn()
        words = str(exc)
        if line is not None:
            words = words.split(" : ", 1)[-1]
        item = ParseErrorItem(
            line - 1 if line is not None else -1, (column or 1) - 1, tfs_names(words)
        )
        raise _logged(TextFormatError(type_name, [item])) from None
    return message


def _logged(error: TextFormatError) -> TextFormatError:
    for line in error.lines:
        log.error("%s", line)
    return error


def parse_file_text(text: str | bytes, message: M, path: str) -> M:
    """`parse` for the text of file `path`, as TFS's ParseProtoTextFile: the parser's lines
    logged, then `InvalidProtobufFile` raised."""
    try:
        return parse(text, message)
    except TextFormatError as exc:
        raise InvalidProtobufFile(path, exc) from None


def check(data: bytes, descriptor: Descriptor) -> list[ParseErrorItem]:
    """The errors protobuf's C++ parser finds in `data` as a `descriptor` message (none: it
    parses)."""
    return _check(data, descriptor).errors


def _check(data: bytes, descriptor: Descriptor) -> _Checker:
    checker = _Checker(data, descriptor)
    checker.parse()
    return checker


_warnings_lock = threading.Lock()
_warnings_logged = 0


def _log_warnings(type_name: str, warnings: list[ParseErrorItem]) -> None:
    """protobuf's `ABSL_LOG_EVERY_POW_2(WARNING)`: the 1st, 2nd, 4th, 8th, ... warning of the
    process is logged, with its count."""
    global _warnings_logged
    for w in warnings:
        with _warnings_lock:
            _warnings_logged += 1
            count = _warnings_logged
        if count & (count - 1) == 0:
            log.warning(
                "Warning parsing text-format %s: %d:%d (N = %d): %s",
                type_name,
                w.line + 1,
                w.column + 1,
                count,
                w.message,
            )


# -- the C++ tokenizer -------------------------------------------------------------------------


@dataclass(slots=True)
class _Token:
    type: int
    text: bytes
    line: int
    column: int
    end_column: int


class _Tokenizer:
    """protobuf's `io::Tokenizer` as the text-format parser sets it up: `#` comments, a float
    may end in `f`, a number must be followed by a space before a letter, no multi-line
    strings. Errors go to `error(line, column, message)`."""

    def __init__(self, data: bytes, error: Callable[[int, int, str], None]) -> None:
        self.data = data
        self.pos = 0
        self.line = 0
        self.column = 0
        self.error = error
        self.report_whitespace = False
        self.report_url_chars = False
        self.current = _Token(_START, b"", 0, 0, 0)
        self.previous = self.current

    @property
    def eof(self) -> bool:
        return self.pos >= len(self.data)

    @property
    def char(self) -> int:
        """The current byte; 0 at the end, as the C++ tokenizer's `current_char_`."""
        return self.data[self.pos] if self.pos < len(self.data) else 0

    def next_char(self) -> None:
        if self.pos >= len(self.data):
            return
        c = self.data[self.pos]
        if c == 0x0A:
            self.line += 1
            self.column = 0
        elif c == 0x09:
            self.column += _TAB_WIDTH - self.column % _TAB_WIDTH
        else:
            self.column += 1
        self.pos += 1

    def add_error(self, message: str) -> None:
        self.error(self.line, self.column, message)

    def try_consume(self, c: int) -> bool:
        if not self.eof and self.char == c:
            self.next_char()
            return True
        return False

    def try_consume_one(self, chars: frozenset[int]) -> bool:
        if not self.eof and self.char in chars:
            self.next_char()
            return True
        return False

    def consume_zero_or_more(self, chars: frozenset[int]) -> None:
        while not self.eof and self.char in chars:
            self.next_char()

    def consume_one_or_more(self, chars: frozenset[int], error: str) -> None:
        if self.eof or self.char not in chars:
            self.add_error(error)
        else:
            self.consume_zero_or_more(chars)

    def next(self) -> bool:
        self.previous = self.current
        while not self.eof:
            start, line, column = self.pos, self.line, self.column
            if self.char in _WHITESPACE_CHARS:
                self.consume_zero_or_more(_WHITESPACE_CHARS)
                if self.report_whitespace:
                    text = self.data[start : self.pos]
                    self.current = _Token(_WHITESPACE, text, line, column, self.column)
                    return True
                continue
            if self.char == ord("#"):
                while not self.eof and self.char != 0x0A:
                    self.next_char()
                self.try_consume(0x0A)
                continue
            if self.eof:
                break
            if self.char < 0x20:
                self.add_error("Invalid control characters encountered in text.")
                self.next_char()
                while not self.eof and self.char < 0x20:
                    self.next_char()
                continue
            self.current = self._token()
            return True
        self.current = _Token(_END, b"", self.line, self.column, self.column)
        return False

    def _token(self) -> _Token:
        start, line, column = self.pos, self.line, self.column
        c = self.char
        if self.report_url_chars:
            if self.try_consume_one(_URL_CHARS):
                self.consume_zero_or_more(_URL_CHARS)
                kind = _URL_CHARS
            else:
                self._consume_symbol()
                kind = _SYMBOL
        elif self.try_consume_one(_LETTERS):
            self.consume_zero_or_more(_ALPHANUMERIC)
            kind = _IDENTIFIER
        elif self.try_consume(ord("0")):
            kind = self._consume_number(started_with_zero=True, started_with_dot=False)
        elif self.try_consume(ord(".")):
            if self.try_consume_one(_DIGITS):
                previous = self.previous
                if (
                    previous.type == _IDENTIFIER
                    and line == previous.line
                    and column == previous.end_column
                ):
                    self.error(
                        self.line,
                        self.column - 2,
                        "Need space between identifier and decimal point.",
                    )
                kind = self._consume_number(started_with_zero=False, started_with_dot=True)
            else:
                kind = _SYMBOL
        elif self.try_consume_one(_DIGITS):
            kind = self._consume_number(started_with_zero=False, started_with_dot=False)
        elif c in (ord('"'), ord("'")):
            self.next_char()
            self._consume_string(c)
            kind = _STRING
        else:
            self._consume_symbol()
            kind = _SYMBOL
        return _Token(kind, self.data[start : self.pos], line, column, self.column)

    def _consume_symbol(self) -> None:
        if self.char & 0x80:
            self.error(self.line, self.column, f"Interpreting non ascii codepoint {self.char}.")
        self.next_char()

    def _consume_number(self, *, started_with_zero: bool, started_with_dot: bool) -> int:
        is_float = False
        if started_with_zero and (self.try_consume(ord("x")) or self.try_consume(ord("X"))):
            self.consume_one_or_more(_HEX, '"0x" must be followed by hex digits.')
        elif started_with_zero and not self.eof and self.char in _DIGITS:
            self.consume_zero_or_more(_OCTAL)
            if not self.eof and self.char in _DIGITS:
                self.add_error("Numbers starting with leading zero must be in octal.")
                self.consume_zero_or_more(_DIGITS)
        else:
            if started_with_dot:
                is_float = True
                self.consume_zero_or_more(_DIGITS)
            else:
                self.consume_zero_or_more(_DIGITS)
                if self.try_consume(ord(".")):
                    is_float = True
                    self.consume_zero_or_more(_DIGITS)
            if self.try_consume(ord("e")) or self.try_consume(ord("E")):
                is_float = True
                if not self.try_consume(ord("-")):
                    self.try_consume(ord("+"))
                self.consume_one_or_more(_DIGITS, '"e" must be followed by exponent.')
            if self.try_consume(ord("f")) or self.try_consume(ord("F")):
                is_float = True
        if not self.eof and self.char in _LETTERS:
            self.add_error("Need space between number and identifier.")
        elif not self.eof and self.char == ord("."):
            if is_float:
                self.add_error("Already saw decimal point or exponent; can't have another one.")
            else:
                self.add_error("Hex and octal numbers must be integers.")
        return _FLOAT if is_float else _INTEGER

    def _consume_string(self, delimiter: int) -> None:
        while True:
            c = self.char
            if c == 0:  # the end, or a NUL byte: the C++ tokenizer cannot tell them apart
                self.add_error("Unexpected end of string.")
                return
            if c == 0x0A:
                self.add_error('Multiline strings are not allowed. Did you miss a "?.')
                return
            if c == ord("\\"):
                self.next_char()
                if self.try_consume_one(_ESCAPES) or self.try_consume_one(_OCTAL):
                    pass
                elif self.try_consume(ord("x")) or self.try_consume(ord("X")):
                    if not self.try_consume_one(_HEX):
                        self.add_error("Expected hex digits for escape sequence.")
                elif self.try_consume(ord("u")):
                    if not all(self.try_consume_one(_HEX) for _ in range(4)):
                        self.add_error("Expected four hex digits for \\u escape sequence.")
                elif self.try_consume(ord("U")):
                    if not (
                        self.try_consume(ord("0"))
                        and self.try_consume(ord("0"))
                        and (self.try_consume(ord("0")) or self.try_consume(ord("1")))
                        and all(self.try_consume_one(_HEX) for _ in range(5))
                    ):
                        self.add_error(
                            "Expected eight hex digits up to 10ffff for \\U escape sequence"
                        )
                else:
                    self.add_error("Invalid escape sequence in string literal.")
                continue
            self.next_char()
            if c == delimiter:
                return


def _parse_integer(text: bytes, max_value: int) -> int | None:
    """`io::Tokenizer::ParseInteger`: decimal, 0x hex or 0 octal, at most `max_value`."""
    base = 10
    digits = text
    if text[:1] == b"0":
        if text[1:2] in (b"x", b"X"):
            base, digits = 16, text[2:]
        else:
            base = 8
    result = 0
    for c in digits:
        value = int(chr(c), 36) if chr(c).isascii() and chr(c).isalnum() else 36
        if value >= base:
            return None
        result = result * base + value
        if result > _UINT64_MAX:
            return None
    return result if result <= max_value else None


def _parse_float(text: bytes) -> float:
    """`io::Tokenizer::ParseFloat` of a token the tokenizer called a float (or a decimal
    integer past uint64): a trailing `f`, and an exponent without digits, are allowed."""
    body = text.decode("ascii", "replace").rstrip("fF")
    if body[-1:] in ("e", "E", "+", "-"):
        body = body.rstrip("+-").rstrip("eE")
    try:
        return float(body)
    except ValueError:
        return 0.0


def _text(token: _Token) -> str:
    return token.text.decode("utf-8", "replace")


# -- the C++ parser ----------------------------------------------------------------------------


class _Message:
    """What the parser needs to know of a message being parsed: its type, which singular
    fields `HasField` would report, which oneofs are set."""

    __slots__ = ("descriptor", "oneofs", "present")

    def __init__(self, descriptor: Descriptor) -> None:
        self.descriptor = descriptor
        self.present: set[str] = set()
        self.oneofs: dict[str, FieldDescriptor] = {}

    def has(self, field: FieldDescriptor) -> bool:
        return field.name in self.present

    def set(self, field: FieldDescriptor, nonzero: bool) -> None:
        """A value set on `field`: present when the field tracks presence, else when the value
        is not its type's zero (proto3's implicit presence)."""
        if field.is_repeated:
            return
        if field.has_presence or nonzero:
            self.present.add(field.name)
        else:
            self.present.discard(field.name)
        oneof = field.containing_oneof
        if oneof is not None:
            self.oneofs[oneof.name] = field


class _Stop(Exception):
    """The first parser error: the parse ends (DO(...) returning false in the C++ code)."""


_RESERVED: dict[str, frozenset[str]] = {}


def _reserved_names(descriptor: Descriptor) -> frozenset[str]:
    names = _RESERVED.get(descriptor.full_name)
    if names is None:
        proto = descriptor_pb2.DescriptorProto()
        descriptor.CopyToProto(proto)
        names = _RESERVED[descriptor.full_name] = frozenset(proto.reserved_name)
    return names


def _is_identifier(text: str) -> bool:
    data = text.encode()
    return bool(data) and data[0] in _LETTERS and all(c in _ALPHANUMERIC for c in data[1:])


class _Checker:
    """`TextFormat::Parser::ParserImpl` with its default settings (no unknown fields or
    enum values, no field numbers, singular fields once: `ParseFromString`), keeping of the
    message only what decides an error."""

    def __init__(self, data: bytes, descriptor: Descriptor) -> None:
        self.errors: list[ParseErrorItem] = []
        self.warnings: list[ParseErrorItem] = []
        self.root = descriptor
        self.depth = 0
        self.tokenizer = _Tokenizer(data, self._record)
        self.tokenizer.next()

    # errors

    def _record(self, line: int, column: int, message: str) -> None:
        self.errors.append(ParseErrorItem(line, column, message))

    def fail(self, message: str) -> _Stop:
        token = self.tokenizer.current
        self._record(token.line, token.column, message)
        return _Stop()

    # the parse

    def parse(self) -> None:
        root = _Message(self.root)
        try:
            while self.tokenizer.current.type != _END:
                self.consume_field(root)
        except _Stop:
            pass

    @property
    def current(self) -> _Token:
        return self.tokenizer.current

    def looking_at(self, text: str) -> bool:
        return self.current.text == text.encode()

    def try_consume(self, text: str) -> bool:
        if self.looking_at(text):
            self.tokenizer.next()
            return True
        return False

    def consume(self, text: str) -> None:
        if not self.looking_at(text):
            raise self.fail(f'Expected "{text}", found "{_text(self.current)}".')
        self.tokenizer.next()

    def _before_whitespace(self, step: Callable[[], Any]) -> Any:
        self.tokenizer.report_whitespace = True
        try:
            return step()
        finally:
            self.tokenizer.report_whitespace = False

    def consume_before_whitespace(self, text: str) -> None:
        self._before_whitespace(lambda: self.consume(text))

    def try_consume_before_whitespace(self, text: str) -> bool:
        return bool(self._before_whitespace(lambda: self.try_consume(text)))

    def try_consume_whitespace(self) -> bool:
        if self.current.type == _WHITESPACE:
            self.tokenizer.next()
            return True
        return False

    def consume_identifier(self) -> str:
        if self.current.type == _IDENTIFIER:
            text = _text(self.current)
            self.tokenizer.next()
            return text
        raise self.fail(f"Expected identifier, got: {_text(self.current)}")

    def consume_string(self) -> bool:
        """Consumes adjacent strings; whether their value is not empty."""
        if self.current.type != _STRING:
            raise self.fail(f"Expected string, got: {_text(self.current)}")
        nonempty = False
        while self.current.type == _STRING:
            text = self.current.text
            closed = len(text) >= 2 and text[-1:] == text[:1]
            nonempty = nonempty or len(text) > (2 if closed else 1)
            self.tokenizer.next()
        return nonempty

    def consume_unsigned_integer(self, max_value: int) -> int:
        if self.current.type != _INTEGER:
            raise self.fail(f"Expected integer, got: {_text(self.current)}")
        value = _parse_integer(self.current.text, max_value)
        if value is None:
            raise self.fail(f"Integer out of range ({_text(self.current)})")
        self.tokenizer.next()
        return value

    def consume_signed_integer(self, max_value: int) -> int:
        negative = self.try_consume("-")
        value = self.consume_unsigned_integer(max_value + 1 if negative else max_value)
        return -value if negative else value

    def consume_double(self) -> float:
        negative = self.try_consume("-")
        token = self.current
        if token.type == _INTEGER:
            text = token.text
            if len(text) >= 2 and text[:1] == b"0" and text[1] in b"xX01234567":
                raise self.fail(f"Expect a decimal number, got: {_text(token)}")
            integer = _parse_integer(text, _UINT64_MAX)
            value = float(integer) if integer is not None else _parse_float(text)
        elif token.type == _FLOAT:
            value = _parse_float(token.text)
        elif token.type == _IDENTIFIER:
            text = _text(token).lower()
            if text in ("inf", "infinity"):
                value = math.inf
            elif text == "nan":
                value = math.nan
            else:
                raise self.fail(f"Expected double, got: {text}")
        else:
            raise self.fail(f"Expected double, got: {_text(token)}")
        self.tokenizer.next()
        return -value if negative else value

    def consume_field(self, message: _Message) -> None:
        descriptor = message.descriptor
        field: FieldDescriptor | None
        if descriptor.full_name == "google.protobuf.Any" and self.looking_at("["):
            self.consume_any(message)
            return self._end_field()
        if self.looking_at("["):
            name, prefix = self.consume_type_url_or_name()
            if prefix:
                raise self.fail('Extension name contains "/"')
            self.try_consume_whitespace()
            field = self._find_extension(descriptor, name)
            if field is None:
                raise self.fail(
                    f'Extension "{name}" is not defined or is not an extension of '
                    f'"{tfs_type_name(descriptor)}".'
                )
            reserved = False
        else:
            name = self._before_whitespace(self.consume_identifier)
            self.try_consume_whitespace()
            field = descriptor.fields_by_name.get(name)
            if field is None:
                lower = descriptor.fields_by_name.get(name.lower())
                if (
                    lower is not None
                    and lower.type == FieldDescriptor.TYPE_GROUP
                    and lower.message_type.name == name
                ):
                    field = lower
            reserved = field is None and name in _reserved_names(descriptor)
            if field is None and not reserved:
                raise self.fail(
                    f'Message type "{tfs_type_name(descriptor)}" has no field named "{name}".'
                )
        if field is None:  # a reserved name: its value is skipped
            if self.try_consume_before_whitespace(":"):
                self.try_consume_whitespace()
                if not self.looking_at("{") and not self.looking_at("<"):
                    self.skip_field_value()
                    return self._end_field()
            self.skip_field_message()
            return self._end_field()
        if field.GetOptions().deprecated:
            token = self.current
            self.warnings.append(
                ParseErrorItem(
                    token.line, token.column, f'text format contains deprecated field "{name}"'
                )
            )
        if not field.is_repeated and message.has(field):
            raise self.fail(f'Non-repeated field "{name}" is specified multiple times.')
        oneof = field.containing_oneof
        if oneof is not None and oneof.name in message.oneofs:
            other = message.oneofs[oneof.name]
            raise self.fail(
                f'Field "{name}" is specified along with field "{other.name}", another member '
                f'of oneof "{oneof.name}".'
            )
        is_message = field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
        if is_message:
            if self.try_consume_before_whitespace(":"):
                self.try_consume_whitespace()
        else:
            self.consume_before_whitespace(":")
            self.try_consume_whitespace()
        if field.is_repeated and self.try_consume("["):
            if not self.try_consume("]"):
                while True:
                    if is_message:
                        self.consume_field_message(message, field)
                    else:
                        self.consume_field_value(message, field)
                    if self.try_consume("]"):
                        break
                    self.consume(",")
        elif is_message:
            self.consume_field_message(message, field)
        else:
            self.consume_field_value(message, field)
        return self._end_field()

    def _end_field(self) -> None:
        # For historical reasons, fields may optionally be separated by commas or semicolons.
        if not self.try_consume(";"):
            self.try_consume(",")

    def consume_message(self, message: _Message, delimiter: str) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(
                f"Message is too deep: servo reads messages nested at most {MAX_DEPTH} deep."
            )
        while not self.looking_at(">") and not self.looking_at("}"):
            self.consume_field(message)
        self.consume(delimiter)
        self.depth -= 1

    def consume_message_delimiter(self) -> str:
        if self.try_consume("<"):
            return ">"
        self.consume("{")
        return "}"

    def consume_field_message(self, message: _Message, field: FieldDescriptor) -> None:
        delimiter = self.consume_message_delimiter()
        message.set(field, True)
        self.consume_message(_Message(field.message_type), delimiter)

    def consume_field_value(self, message: _Message, field: FieldDescriptor) -> None:
        kind = field.cpp_type
        nonzero: bool
        if kind == FieldDescriptor.CPPTYPE_INT32:
            nonzero = self.consume_signed_integer(_INT32_MAX) != 0
        elif kind == FieldDescriptor.CPPTYPE_UINT32:
            nonzero = self.consume_unsigned_integer(_UINT32_MAX) != 0
        elif kind == FieldDescriptor.CPPTYPE_INT64:
            nonzero = self.consume_signed_integer(_INT64_MAX) != 0
        elif kind == FieldDescriptor.CPPTYPE_UINT64:
            nonzero = self.consume_unsigned_integer(_UINT64_MAX) != 0
        elif kind == FieldDescriptor.CPPTYPE_FLOAT:
            nonzero = _float_bits(self.consume_double()) != 0
        elif kind == FieldDescriptor.CPPTYPE_DOUBLE:
            nonzero = struct.pack("<d", self.consume_double()) != bytes(8)
        elif kind == FieldDescriptor.CPPTYPE_STRING:
            nonzero = self.consume_string()
        elif kind == FieldDescriptor.CPPTYPE_BOOL:
            if self.current.type == _INTEGER:
                nonzero = self.consume_unsigned_integer(1) != 0
            else:
                value = self.consume_identifier()
                if value in ("true", "True", "t"):
                    nonzero = True
                elif value in ("false", "False", "f"):
                    nonzero = False
                else:
                    raise self.fail(
                        f'Invalid value for boolean field "{field.name}". Value: "{value}".'
                    )
        else:  # an enum
            nonzero = self.consume_enum(field)
        message.set(field, nonzero)

    def consume_enum(self, field: FieldDescriptor) -> bool:
        enum = field.enum_type
        number: int | None = None
        if self.current.type == _IDENTIFIER:
            text = self.consume_identifier()
            found = enum.values_by_name.get(text)
        elif self.looking_at("-") or self.current.type == _INTEGER:
            number = self.consume_signed_integer(_INT32_MAX)
            text = str(number)
            found = enum.values_by_number.get(number)
        else:
            raise self.fail(f"Expected integer or identifier, got: {_text(self.current)}")
        if found is not None:
            return found.number != 0
        if number is not None and not enum.is_closed:
            return number != 0
        raise self.fail(f'Unknown enumeration value of "{text}" for field "{field.name}".')

    # Any, extensions, skipped fields

    def consume_type_url_or_name(self) -> tuple[str, str]:
        """`[type.url/prefix/full.Name]` or `[full.Name]`: (the full name, the URL prefix)."""
        tokenizer = self.tokenizer
        tokenizer.report_url_chars = True
        self.try_consume("[")
        text = ""
        while self.current.type == _URL_CHARS:
            text += _text(self.current)
            tokenizer.next()
        tokenizer.report_url_chars = False
        self.consume_before_whitespace("]")
        slash = text.rfind("/")
        if slash < 0:
            prefix, name = "", text
        else:
            prefix, name = text[: slash + 1], text[slash + 1 :]
            if prefix == "/":
                raise self.fail("Type URL prefix is empty")
            if prefix[0] == "/":
                raise self.fail('Type URL starts with "/"')
            for i, c in enumerate(prefix):
                hex_digits = prefix[i + 1 : i + 3]
                if c == "%" and (
                    len(hex_digits) < 2
                    or not all(h in "0123456789abcdefABCDEF" for h in hex_digits)
                ):
                    raise self.fail(f'Invalid percent encode, got: "{prefix[i : i + 3]}"')
        for identifier in name.split("."):
            if not _is_identifier(identifier):
                raise self.fail(f'Invalid identifier in type name, got: "{identifier}"')
        return name, prefix

    def consume_any(self, message: _Message) -> None:
        name, prefix = self.consume_type_url_or_name()
        if not prefix:
            raise self.fail("Type URL prefix is missing")
        self.try_consume_whitespace()
        if self.try_consume_before_whitespace(":"):
            self.try_consume_whitespace()
        try:
            value_type = message.descriptor.file.pool.FindMessageTypeByName(name)
        except KeyError:
            value_type = None
        if value_type is None:
            raise self.fail(f'Could not find type "{prefix}{name}" stored in google.protobuf.Any.')
        delimiter = self.consume_message_delimiter()
        self.consume_message(_Message(value_type), delimiter)
        if "type_url" in message.present or "value" in message.present:
            raise self.fail("Non-repeated Any specified multiple times.")
        message.present.update(("type_url", "value"))

    @staticmethod
    def _find_extension(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
        try:
            field = descriptor.file.pool.FindExtensionByName(name)
        except KeyError:
            return None
        return field if field.containing_type.full_name == descriptor.full_name else None

    def skip_field(self) -> None:
        if self.looking_at("["):
            self.consume_type_url_or_name()
        else:
            self._before_whitespace(self.consume_identifier)
        self.try_consume_whitespace()
        if self.try_consume_before_whitespace(":"):
            self.try_consume_whitespace()
            if not self.looking_at("{") and not self.looking_at("<"):
                self.skip_field_value()
            else:
                self.skip_field_message()
        else:
            self.skip_field_message()
        self._end_field()

    def skip_field_message(self) -> None:
        delimiter = self.consume_message_delimiter()
        while not self.looking_at(">") and not self.looking_at("}"):
            self.skip_field()
        self.consume(delimiter)

    def skip_field_value(self) -> None:
        if self.current.type == _STRING:
            while self.current.type == _STRING:
                self.tokenizer.next()
            return
        if self.try_consume("["):
            if not self.try_consume("]"):
                while True:
                    if not self.looking_at("{") and not self.looking_at("<"):
                        self.skip_field_value()
                    else:
                        self.skip_field_message()
                    if self.try_consume("]"):
                        break
                    self.consume(",")
            return
        has_minus = self.try_consume("-")
        if self.current.type not in (_INTEGER, _FLOAT, _IDENTIFIER):
            raise self.fail(f"Cannot skip field value, unexpected token: {_text(self.current)}")
        if has_minus and self.current.type == _IDENTIFIER:
            text = _text(self.current).lower()
            if text not in ("inf", "infinity", "nan"):
                raise self.fail(f"Invalid float number: {text}")
        self.tokenizer.next()


def _float_bits(value: float) -> int:
    """The bits of `value` as protobuf's `SafeDoubleToFloat` stores it in a float field."""
    if value > _FLOAT_MAX:
        value = math.inf
    elif value < -_FLOAT_MAX:
        value = -math.inf
    try:
        return int.from_bytes(struct.pack("<f", value), "little")
    except OverflowError:
        return 1
