"""mitalk-p2p."""
