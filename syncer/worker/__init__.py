"""The pull half: inbox -> dirty scopes -> sync passes -> mirror rows and cursor.

``jobs`` is the worker (drain, safety net, retired scopes, housekeeping), ``scheduler`` when its jobs
run, ``scopes`` the declarations expanded into scopes, ``scopestate`` each scope's lease and cursor,
``sync`` one pass of one scope, ``rounds`` a round and its cursor, ``containers`` container scopes
(folders become child scopes), ``fetch`` notified items fetched by id where Graph has no delta,
``prefetch`` the next page while this one is written, ``writer`` rows into a mirror table.
"""
