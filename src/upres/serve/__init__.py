"""The web page and HTTP API (``upres serve``); see :mod:`upres.serve.app`."""
