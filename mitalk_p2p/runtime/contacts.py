"""The runtime's directory of control addresses: who can be dialed where.

Room state names members by key only.  To reach a member (to send it a
heartbeat, a claim after the host left, or a position in the media tree), a
peer needs that member's control address.  Each side of a new link announces
its own address, and the host passes every address it learns on to the other
members, so a successor can reach everyone when it takes over.

An address from the directory is only a hint: a dial checks in the handshake
that the peer at that address holds the expected key, so a wrong or forged
entry costs a failed connection and nothing else.
"""

from __future__ import annotations

from typing import Final

import attrs

from ..core.identity import PUBLIC_KEY_SIZE, PublicKey
from ..core.wire import Reader, Writer
from .addresses import AddressError, parse_address

MAX_CONTACTS_PER_MESSAGE: Final = 4096
MAX_ADDRESS_TEXT: Final = 64


@attrs.frozen
class Contact:
    key: PublicKey
    address: str
    """The member's control (websocket) address, ``HOST:PORT``."""


def encode_contacts(contacts: list[Contact] | tuple[Contact, ...]) -> bytes:
    writer = Writer().u16(len(contacts))
    for contact in contacts:
        writer.fixed(contact.key.raw, PUBLIC_KEY_SIZE).text(contact.address)
    return writer.getvalue()


def decode_contacts(data: bytes) -> list[Contact]:
    """Parse a contact list; raises :class:`~..core.errors.WireError` when malformed."""
    reader = Reader(data, "contact list")
    count = reader.u16()
    contacts = []
    for _ in range(min(count, MAX_CONTACTS_PER_MESSAGE)):
        key = PublicKey(reader.fixed(PUBLIC_KEY_SIZE))
        address = reader.text(MAX_ADDRESS_TEXT)
        try:
            parse_address(address)
        except AddressError:
            continue  # one bad entry doesn't spoil the others
        contacts.append(Contact(key, address))
    reader.finish()
    return contacts
