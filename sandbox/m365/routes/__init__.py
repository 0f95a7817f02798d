"""The sandbox tenant's HTTP endpoints, one module per service (each a factory of the routes of its host).

- :mod:`~sandbox.m365.routes.exchange`, :mod:`~sandbox.m365.routes.sharepoint`: InvokeCommand
  (:mod:`~sandbox.m365.routes.invoke`).
- :mod:`~sandbox.m365.routes.windows365`, :mod:`~sandbox.m365.routes.directory`: Microsoft Graph.
- :mod:`~sandbox.m365.routes.support`: the support desk.
- :mod:`~sandbox.m365.routes.body`: a request's JSON body, read once.
"""
