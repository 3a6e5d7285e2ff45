"""Helpers the tests share, imported as ``support.NAME`` (``tests/`` is on ``sys.path`` through its conftest).

``sandboxes``: pointing a test at a sandbox, waiting for events, watching processes;
``transport``: a requests transport answered by a function (or the network), recording every exchange;
``fakeclock``: time that passes only when someone sleeps; ``stubhttp``: stand-in HTTP servers;
``gitserver``: a private git server behind Basic auth; ``wheels``: tiny wheels for offline pip;
``prism``: the Prism server of ``tests/prism`` and its traffic; ``slow_sshd.py``: a script, a
stand-in for sshd slow to take SIGHUP.
"""
