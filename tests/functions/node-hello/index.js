// Stratus test fixture: hello world with module state (Node.js, CommonJS).
// Handler: index.handler
'use strict';

let count = 0;

const ENV_KEYS = [
  'AWS_LAMBDA_FUNCTION_NAME', 'AWS_LAMBDA_FUNCTION_VERSION', 'AWS_LAMBDA_FUNCTION_MEMORY_SIZE',
  'AWS_LAMBDA_LOG_GROUP_NAME', 'AWS_LAMBDA_LOG_STREAM_NAME', 'AWS_LAMBDA_RUNTIME_API',
  'AWS_EXECUTION_ENV', 'AWS_REGION', 'AWS_DEFAULT_REGION', 'LAMBDA_TASK_ROOT', 'LAMBDA_RUNTIME_DIR',
  '_HANDLER', '_X_AMZN_TRACE_ID', 'TZ', 'GREETING',
];

exports.handler = async (event, context) => {
  count += 1;
  const name = (event && typeof event === 'object' && event.name) || 'world';
  console.log(`hello from node-hello: name=${name} count=${count} request_id=${context.awsRequestId}`);
  const env = {};
  for (const k of ENV_KEYS) if (process.env[k] !== undefined) env[k] = process.env[k];
  return {
    hello: name,
    count,
    request_id: context.awsRequestId,
    remaining_ms: context.getRemainingTimeInMillis(),
    function_name: context.functionName,
    function_version: context.functionVersion,
    invoked_function_arn: context.invokedFunctionArn,
    memory_limit_in_mb: context.memoryLimitInMB,
    env,
  };
};
