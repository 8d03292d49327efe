"""Finding rooms on the local network with mDNS / DNS-SD (service ``_mitalk._udp.local.``).

- :mod:`.room_record`: the TXT record of a room, encoded and decoded without I/O.
- :mod:`.mdns`: zeroconf under trio: advertising a room and browsing for rooms.
- :mod:`.advertise`: keeps a running peer's room advertised while it is the host.
- :mod:`.candidates`: where a joiner may find a room (LAN, bootstrap, invite) and in
  which order to try those addresses.
- :mod:`.joining`: joining by trying those addresses one by one, choosing a room from
  the LAN list, and the invites kept in the profile.
- :mod:`.rooms_view`: how ``mitalk rooms`` shows the rooms it sees.
- :mod:`.switch`: ``MITALK_MDNS=off`` turns all of it off.

Everything found here is a hint.  A record can be forged by anyone on the LAN, so
joining always checks the host's key during the Noise handshake against the key the
invite names; a record can point a peer somewhere, never vouch for what is there.
"""
