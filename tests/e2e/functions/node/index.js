// Node.js test function for the Stratus end-to-end suite.
const crypto = require("crypto");

const SANDBOX_ID = crypto.randomUUID();
let count = 0;

exports.handler = async (event, context) => {
  count += 1;
  console.log(`hello-from-node ${context.awsRequestId}`);
  return {
    hello: "node",
    count,
    sandbox: SANDBOX_ID,
    request_id: context.awsRequestId,
    function_name: context.functionName,
    memory_limit_in_mb: context.memoryLimitInMB,
    remaining_ms: context.getRemainingTimeInMillis(),
    event,
    env: {
      AWS_LAMBDA_FUNCTION_NAME: process.env.AWS_LAMBDA_FUNCTION_NAME,
      AWS_EXECUTION_ENV: process.env.AWS_EXECUTION_ENV,
      AWS_REGION: process.env.AWS_REGION,
      LAMBDA_TASK_ROOT: process.env.LAMBDA_TASK_ROOT,
      _HANDLER: process.env._HANDLER,
    },
    cwd: process.cwd(),
    node: process.version,
  };
};

exports.fail = async () => {
  throw new TypeError("node boom");
};

exports.callback = (event, context, callback) => {
  callback(null, { via: "callback", event });
};
