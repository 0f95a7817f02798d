"""The contracts between workflows and activities: their input and result models and the activity stubs.

A *contract* module per operation family holds what both sides of an activity call must agree on -- the pydantic
models that travel through Temporal and a stub class whose methods carry the activity definitions (names and
types) -- and nothing else. It imports only pydantic, temporalio, the standard library and ckey's light domain
modules (:mod:`ckey.models`, :mod:`ckey.operations`), never an I/O library: the workflows import it, so the worker's
workflow sandbox, the API and the replay tests load no Azure SDK, HTTP client, database driver or sandbox code.

The shape follows ``temporalio/samples-python``, where workflows and activities share a light module of data
classes (``shared.py``, ``your_dataobject.py``) beside ``workflows.py`` and ``activities.py``: here it is a
top-level package, a sibling of ``workflows`` and ``activities``, so that neither of those imports the other.
Workflows call activities by method reference on the stub (``workflow.execute_activity_method``, which reads the
activity's name and result type from the stub's decorated method); each family's real class in ``activities/``
subclasses its stub and implements every method under the same name, so activity names, and with them the
recorded histories, are unchanged.
"""
