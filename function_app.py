"""The Azure Functions entry point: one app, the blueprints of ``functions/`` registered on it.

Kept free of import-time work: the host indexes this module on every cold start.
"""

import azure.durable_functions as df
import azure.functions as func

from functions.http_api import bp as http_api
from functions.workflows_diagnostics import bp as workflows_diagnostics

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(http_api)
app.register_functions(workflows_diagnostics)
