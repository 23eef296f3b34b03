"""``anxin demo`` and its stand-ins for the outside world (a 120 dispatch centre and the
family's phones). Kept out of the packages that ship the service: the HTTP API ships no fakes.
"""
