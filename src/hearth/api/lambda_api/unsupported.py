"""Lambda API operations Hearth does not serve: answered in AWS's error shape, naming the operation.

boto3 can call every operation of the Lambda API; those Hearth has no route for answer
`501 UnsupportedOperationException` (botocore raises it as a ClientError with that code and does not
retry it) instead of a bare 404 or 405. The table is the Lambda API's own (botocore's service model,
request URI and method per operation), less the operations router.py serves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hearth.api.lambda_api.errors import LambdaError

# method, request URI template, operation (from botocore's data/lambda/.../service-2.json)
OPERATIONS = """
POST /2014-11-13/functions/{FunctionName}/invoke-async InvokeAsync
GET /2015-03-31/event-source-mappings ListEventSourceMappings
POST /2015-03-31/event-source-mappings CreateEventSourceMapping
DELETE /2015-03-31/event-source-mappings/{UUID} DeleteEventSourceMapping
GET /2015-03-31/event-source-mappings/{UUID} GetEventSourceMapping
PUT /2015-03-31/event-source-mappings/{UUID} UpdateEventSourceMapping
GET /2015-03-31/functions/{FunctionName}/aliases ListAliases
POST /2015-03-31/functions/{FunctionName}/aliases CreateAlias
DELETE /2015-03-31/functions/{FunctionName}/aliases/{Name} DeleteAlias
GET /2015-03-31/functions/{FunctionName}/aliases/{Name} GetAlias
PUT /2015-03-31/functions/{FunctionName}/aliases/{Name} UpdateAlias
GET /2015-03-31/functions/{FunctionName}/policy GetPolicy
POST /2015-03-31/functions/{FunctionName}/policy AddPermission
DELETE /2015-03-31/functions/{FunctionName}/policy/{StatementId} RemovePermission
GET /2015-03-31/functions/{FunctionName}/versions ListVersionsByFunction
POST /2015-03-31/functions/{FunctionName}/versions PublishVersion
GET /2016-08-19/account-settings GetAccountSettings
DELETE /2017-03-31/tags/{Resource} UntagResource
GET /2017-03-31/tags/{Resource} ListTags
POST /2017-03-31/tags/{Resource} TagResource
DELETE /2017-10-31/functions/{FunctionName}/concurrency DeleteFunctionConcurrency
PUT /2017-10-31/functions/{FunctionName}/concurrency PutFunctionConcurrency
GET /2018-10-31/layers ListLayers
GET /2018-10-31/layers/{LayerName}/versions ListLayerVersions
POST /2018-10-31/layers/{LayerName}/versions PublishLayerVersion
DELETE /2018-10-31/layers/{LayerName}/versions/{VersionNumber} DeleteLayerVersion
GET /2018-10-31/layers/{LayerName}/versions/{VersionNumber} GetLayerVersion
GET /2018-10-31/layers/{LayerName}/versions/{VersionNumber}/policy GetLayerVersionPolicy
POST /2018-10-31/layers/{LayerName}/versions/{VersionNumber}/policy AddLayerVersionPermission
DELETE /2018-10-31/layers/{LayerName}/versions/{VersionNumber}/policy/{StatementId} RemoveLayerVersionPermission
GET /2018-10-31/layers GetLayerVersionByArn
DELETE /2019-09-25/functions/{FunctionName}/event-invoke-config DeleteFunctionEventInvokeConfig
GET /2019-09-25/functions/{FunctionName}/event-invoke-config GetFunctionEventInvokeConfig
POST /2019-09-25/functions/{FunctionName}/event-invoke-config UpdateFunctionEventInvokeConfig
PUT /2019-09-25/functions/{FunctionName}/event-invoke-config PutFunctionEventInvokeConfig
GET /2019-09-25/functions/{FunctionName}/event-invoke-config/list ListFunctionEventInvokeConfigs
GET /2019-09-30/functions/{FunctionName}/concurrency GetFunctionConcurrency
DELETE /2019-09-30/functions/{FunctionName}/provisioned-concurrency DeleteProvisionedConcurrencyConfig
GET /2019-09-30/functions/{FunctionName}/provisioned-concurrency GetProvisionedConcurrencyConfig
PUT /2019-09-30/functions/{FunctionName}/provisioned-concurrency PutProvisionedConcurrencyConfig
GET /2019-09-30/functions/{FunctionName}/provisioned-concurrency ListProvisionedConcurrencyConfigs
GET /2020-04-22/code-signing-configs ListCodeSigningConfigs
POST /2020-04-22/code-signing-configs CreateCodeSigningConfig
DELETE /2020-04-22/code-signing-configs/{CodeSigningConfigArn} DeleteCodeSigningConfig
GET /2020-04-22/code-signing-configs/{CodeSigningConfigArn} GetCodeSigningConfig
PUT /2020-04-22/code-signing-configs/{CodeSigningConfigArn} UpdateCodeSigningConfig
GET /2020-04-22/code-signing-configs/{CodeSigningConfigArn}/functions ListFunctionsByCodeSigningConfig
DELETE /2020-06-30/functions/{FunctionName}/code-signing-config DeleteFunctionCodeSigningConfig
GET /2020-06-30/functions/{FunctionName}/code-signing-config GetFunctionCodeSigningConfig
PUT /2020-06-30/functions/{FunctionName}/code-signing-config PutFunctionCodeSigningConfig
GET /2021-07-20/functions/{FunctionName}/runtime-management-config GetRuntimeManagementConfig
PUT /2021-07-20/functions/{FunctionName}/runtime-management-config PutRuntimeManagementConfig
DELETE /2021-10-31/functions/{FunctionName}/url DeleteFunctionUrlConfig
GET /2021-10-31/functions/{FunctionName}/url GetFunctionUrlConfig
POST /2021-10-31/functions/{FunctionName}/url CreateFunctionUrlConfig
PUT /2021-10-31/functions/{FunctionName}/url UpdateFunctionUrlConfig
GET /2021-10-31/functions/{FunctionName}/urls ListFunctionUrlConfigs
POST /2021-11-15/functions/{FunctionName}/response-streaming-invocations InvokeWithResponseStream
GET /2024-08-31/functions/{FunctionName}/recursion-config GetFunctionRecursionConfig
PUT /2024-08-31/functions/{FunctionName}/recursion-config PutFunctionRecursionConfig
GET /2025-11-30/capacity-providers ListCapacityProviders
POST /2025-11-30/capacity-providers CreateCapacityProvider
DELETE /2025-11-30/capacity-providers/{CapacityProviderName} DeleteCapacityProvider
GET /2025-11-30/capacity-providers/{CapacityProviderName} GetCapacityProvider
PUT /2025-11-30/capacity-providers/{CapacityProviderName} UpdateCapacityProvider
GET /2025-11-30/capacity-providers/{CapacityProviderName}/function-versions ListFunctionVersionsByCapacityProvider
GET /2025-11-30/functions/{FunctionName}/function-scaling-config GetFunctionScalingConfig
PUT /2025-11-30/functions/{FunctionName}/function-scaling-config PutFunctionScalingConfig
POST /2025-12-01/durable-execution-callbacks/{CallbackId}/fail SendDurableExecutionCallbackFailure
POST /2025-12-01/durable-execution-callbacks/{CallbackId}/heartbeat SendDurableExecutionCallbackHeartbeat
POST /2025-12-01/durable-execution-callbacks/{CallbackId}/succeed SendDurableExecutionCallbackSuccess
DELETE /2025-12-01/durable-executions/{DurableExecutionArn} DeleteDurableExecution
GET /2025-12-01/durable-executions/{DurableExecutionArn} GetDurableExecution
POST /2025-12-01/durable-executions/{DurableExecutionArn}/checkpoint CheckpointDurableExecution
GET /2025-12-01/durable-executions/{DurableExecutionArn}/history GetDurableExecutionHistory
POST /2025-12-01/durable-executions/{DurableExecutionArn}/pause PauseDurableExecution
POST /2025-12-01/durable-executions/{DurableExecutionArn}/resume ResumeDurableExecution
GET /2025-12-01/durable-executions/{DurableExecutionArn}/state GetDurableExecutionState
POST /2025-12-01/durable-executions/{DurableExecutionArn}/stop StopDurableExecution
GET /2025-12-01/functions/{FunctionName}/durable-executions ListDurableExecutionsByFunction
DELETE /2026-07-09/resource-policy/{ResourceArn} DeleteResourcePolicy
GET /2026-07-09/resource-policy/{ResourceArn} GetResourcePolicy
PUT /2026-07-09/resource-policy/{ResourceArn} PutResourcePolicy
"""
# Why Hearth has no such thing, and what it has instead (matched on the operation's name).
HINTS: tuple[tuple[str, str], ...] = (
    ("Alias", "Hearth serves each function's current version only"),
    ("Version", "Hearth serves each function's current version only"),
    ("Layer", "declare dependencies in requirements.txt / package.json in the zip"),
    ("Url", "every function has an HTTP trigger at /fn/<route> (docs/api.md, 'HTTP trigger')"),
    ("Concurrency", "set max_instances and concurrency through /api/functions"),
    ("EventInvokeConfig", "set retries through /api/functions; async invocations are in /api/jobs"),
)


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    name: str
    pattern: re.Pattern[str]


def template_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts if part)
    return re.compile(f"^{regex}$")


def load_operations() -> list[Operation]:
    rows = [line.split() for line in OPERATIONS.strip().splitlines()]
    return [Operation(method, template, name, template_pattern(template)) for method, template, name in rows]


TABLE = load_operations()
# The API versions (first path segment) of the operations: each gets a catch-all route in router.py.
API_VERSIONS: tuple[str, ...] = tuple(sorted({op.template.split("/")[1] for op in TABLE}))


def operation_of(method: str, path: str) -> str | None:
    for op in TABLE:
        if op.method == method and op.pattern.match(path):
            return op.name
    return None


def unsupported(method: str, path: str) -> LambdaError:
    name = operation_of(method, path)
    if name is None:
        return LambdaError(404, "UnknownOperationException", f"Hearth knows no Lambda API operation at {method} {path}")
    hint = next((text for key, text in HINTS if key in name), None)
    message = f"Hearth does not support the Lambda operation {name}" + (f": {hint}" if hint else "")
    return LambdaError(501, "UnsupportedOperationException", message)
