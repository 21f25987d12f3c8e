"""``python -m core <command>``: the same command line as ``ccxt-trading-webhook`` (core.cli)."""

from core.cli import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python -m core"))
