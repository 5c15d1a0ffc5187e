"""The pull half: inbox -> dirty scopes -> sync passes -> mirror rows and cursor.

``jobs`` is the worker (drain, safety net, retired scopes, housekeeping), ``scheduler`` when its jobs
run, ``scopes`` the declarations expanded into scopes, ``scopestate`` each scope's lease and cursor,
``sync`` one pass of one scope, ``prefetch`` the next page while this one is written, ``writer`` rows
into a mirror table.
"""
