"""Call records from the hotline's PBX: sources (csv, mail, asterisk, http-json), import, cursors.

`config` reads [[pbx_sources]] and [calls]; `records` turns one row of any source into a
call; `writer` stores calls in batches, once per source and call id; `run` fetches one
source on its schedule (or one file now) and then runs the callback check.
"""
