"""Sources: one module per way in, sharing `base`. A source never imports another source.

events_api     POST /v1/events: the collector's own form, Bearer key
yespo_compat   POST /api/v1/event, /api/v2/event, /api/v1/orders: Yespo's own bodies
browser        POST {web_path}: the tracking script, site keys tied to origins
visitors       anonymous visitors' events, held until they identify (not a source:
               what the sources that see anonymous visitors share)
"""
