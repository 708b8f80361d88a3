"""The HTTP management API: schedules, blockouts, tokens with roles and ownership, the audit
log, health and readiness (app.py builds it, server.py serves it).

Nothing is imported here: the CLI reaches tokens.py without loading FastAPI (a second of
start-up on a busy machine).
"""
