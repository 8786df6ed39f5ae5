"""The Azure Functions entry point: one app, the blueprints of ``functions/`` registered on it.

Kept free of import-time work: the host indexes this module on every cold start.
"""

import azure.durable_functions as df
import azure.functions as func

from functions import blueprints

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
for blueprint in blueprints():
    app.register_functions(blueprint)
