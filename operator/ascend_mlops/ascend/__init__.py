"""Ascend 310 integration: device constants and the opt-in simulators.

`simmodel` is the file format shared by the ATC simulator (writer) and the
pyACL simulator (reader). Nothing here is used on a real Ascend node except
the constants.
"""
