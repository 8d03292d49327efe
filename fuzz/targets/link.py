"""What arrives inside a secure link: record framing, and the directory of control addresses."""

from __future__ import annotations

from collections.abc import Iterator

from mitalk_p2p.core.errors import WireError
from mitalk_p2p.core.identity import PublicKey
from mitalk_p2p.runtime.addresses import AddressError, format_address, parse_address
from mitalk_p2p.runtime.contacts import Contact, decode_contacts, encode_contacts
from mitalk_p2p.runtime.link_records import (
    LAST,
    MORE,
    Channel,
    Reassembler,
    RecordError,
    split_message,
)

from . import Target, expect

MAX_MESSAGE = 1024
"""A small reassembly limit, so that inputs of a few hundred bytes reach it."""


def check_contacts(data: bytes) -> None:
    try:
        contacts = decode_contacts(data)
    except WireError:
        return
    for contact in contacts:
        parse_address(contact.address)  # the decoder kept only usable addresses
    expect(decode_contacts(encode_contacts(contacts)) == contacts, "contacts do not round-trip")


def records_of(data: bytes) -> Iterator[bytes]:
    """The input as link records: each a length byte, then that many bytes."""
    position = 0
    while position < len(data):
        length = data[position]
        yield data[position + 1 : position + 1 + length]
        position += 1 + length


def check_records(data: bytes) -> None:
    reassembler = Reassembler(max_message=MAX_MESSAGE)
    for record in records_of(data):
        try:
            whole = reassembler.add(record)
        except RecordError:
            return  # the link is closed after a bad record
        if whole is not None:
            channel, message = whole
            expect(isinstance(channel, Channel), "a message without a channel")
            expect(len(message) < MAX_MESSAGE, "a message over the limit was reassembled")
            expect(record[0] == LAST, "a message ended on a record marked MORE")
        else:
            expect(record[0] == MORE, "a record marked LAST did not end a message")


def check_split(data: bytes) -> None:
    """Whatever is sent comes out whole, on its channel."""
    reassembler = Reassembler()
    for channel in Channel:
        out = [reassembler.add(record) for record in split_message(channel, data)]
        expect(out[-1] == (channel, data) and not any(out[:-1]), "split does not reassemble")


def check_address(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    for any_port in (False, True):
        try:
            host, port = parse_address(text, any_port=any_port)
        except AddressError:
            continue
        again = parse_address(format_address(host, port), any_port=any_port)
        expect(again == (host, port), "a parsed address does not round-trip")


def seeds() -> Iterator[tuple[str, bytes]]:
    key = PublicKey(bytes(range(32)))
    yield "contacts", encode_contacts([
        Contact(key, "127.0.0.1:4000"), Contact(key, "[::1]:4001"), Contact(key, "bad"),
    ])
    yield "contacts", encode_contacts([])
    framed = bytearray()
    for record in split_message(Channel.CONTACTS, b"hello"):
        framed += bytes((len(record),)) + record
    yield "records", bytes(framed)
    yield "records", bytes((3, MORE, 0, 1, 2, LAST, 2))
    yield "split", b"a message"
    for text in ("127.0.0.1:4000", "[::1]:0", "[fe80::1%eth0]:9", "0.0.0.0:65535"):
        yield "address", text.encode()


TARGET = Target(
    "link",
    "secure-link record framing, the control-address directory, and HOST:PORT addresses",
    (
        ("contacts", check_contacts),
        ("records", check_records),
        ("split", check_split),
        ("address", check_address),
    ),
    seeds,
    dictionary="text.dict",
)
