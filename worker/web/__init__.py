"""The operator's side of the HTTP API: API keys, the Failed Sends API and page, metrics.

``producers/http/`` is the intake; :func:`worker.web.app.create_app` plugs this package into it.
"""
