"""Settings for the whole test suite.

mDNS is turned off for every test and every process a test starts
(``MITALK_MDNS=off`` is inherited), so nothing multicasts on the machine's real
network.  The mDNS tests in ``tests/discovery`` turn it back on explicitly, and
only inside network namespaces they create.
"""

from __future__ import annotations

import os

from mitalk_p2p.discovery.switch import MDNS_ENV

os.environ[MDNS_ENV] = "off"
