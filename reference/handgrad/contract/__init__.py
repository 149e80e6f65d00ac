"""The contract: what both sides share and neither owns.

Model specs of the recurrent and multitask families (:mod:`.recurrent`, :mod:`.multitask`), term
names, symbols and parameter tables (:mod:`.names`). hand/ and twin/ import these, never each
other; see manual/architecture.md.
"""
