"""Inspections (SPEC 7.3): every (asset, standard) a template or a request selects, judged
now from what the engines last reported, with the manual checklist beside it; and the
schedules that run them (or send a summary) at cron times in the site's time zone.

    config      site.yaml `inspections:` (pydantic only: agent/site.py imports it)
    cron        five-field cron expressions, next and latest fire times, DST-correct
    judge       the pairs of an inspection from the compliance table, their NCs
    service     run, answer, read and list inspections (no HTTP)
    render      a report or a summary as the text of one notification channel's tool
    summary     `report_summary`, what a `report:` schedule sends (counts, KPI figures)
    schedule    `run_due_schedules(now)`: each fire time once, across restarts and replicas
    schemas     the bodies of /api/v1/inspections (the router: api/routes/inspections.py)

This package's __init__ imports nothing: the agent loads `config` (and `cron`) without
the API's stack.
"""
