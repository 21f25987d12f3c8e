"""The ccxt exchanges plugin (``plugin``). Importing the package makes ccxt's packages import
their exchange classes on first use (``loader``): before any of its modules imports ccxt."""

from plugins.exchanges.ccxt.loader import install

install()
