"""``python -m mitalk_p2p``: the same command line as ``mitalk``."""

from mitalk_p2p.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
