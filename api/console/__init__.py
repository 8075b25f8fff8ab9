"""The operator console: server-rendered pages under ``/ui``, served by the API process.

Pages are HTML rendered here from the same engine functions the ``/v1`` routes use; the
browser runs only the project's own small script (``static/console.js``) and the vendored
diagram renderer, both served locally (no CDN). An operator signs in with an API key
(:mod:`api.console.sessions`); what the key's scopes allow is shown, the rest hidden, and
every action is checked again on the server.
"""
