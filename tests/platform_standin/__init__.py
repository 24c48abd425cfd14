"""The MyRVM platform stand-in (see server.py); `python -m tests.platform_standin --help`."""
