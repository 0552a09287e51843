// Evaluates AWS requests against IAM policies with @cloud-copilot/iam-simulate
// (installed by scripts/iamsim.sh install into .tools/iamsim). Used by the Go
// tests through internal/awscalls; not part of eda.
//
// stdin:  {"requests": [{"id": "...", "principal": "arn:aws:iam::1:role/x" | "sns.amazonaws.com",
//          "action": "sqs:ReceiveMessage", "resource": "arn:...", "accountId": "1",
//          "context": {"aws:SourceArn": "..."},
//          "identityPolicies": [{"name": "...", "policy": {...}}], "resourcePolicy": {...} | null}]}
// stdout: {"results": [{"id": "...", "decision": "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied" | "Error",
//          "error": "...", "resourceType": "queue"}]}
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(path.join(root, '.tools/iamsim/package.json'))
let sim
try {
  sim = await import(require.resolve('@cloud-copilot/iam-simulate'))
} catch (e) {
  console.error(`iamsim: @cloud-copilot/iam-simulate is not installed (${e.message}); run: scripts/iamsim.sh install`)
  process.exit(3)
}

let input = ''
for await (const chunk of process.stdin) input += chunk
const { requests } = JSON.parse(input)

const results = []
for (const r of requests) {
  const simulation = {
    request: {
      principal: r.principal,
      action: r.action,
      resource: { resource: r.resource, accountId: r.accountId },
      contextVariables: r.context || {}
    },
    identityPolicies: r.identityPolicies || [],
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    resourcePolicy: r.resourcePolicy || undefined
  }
  const out = await sim.runSimulation(simulation, {})
  if (out.resultType === 'error') {
    results.push({ id: r.id, decision: 'Error', error: JSON.stringify(out.errors) })
    continue
  }
  const res = out.resultType === 'single' ? out.result : undefined
  results.push({
    id: r.id,
    decision: out.overallResult,
    resourceType: res?.resourceType,
    ignoredContextKeys: res?.ignoredContextKeys?.length ? res.ignoredContextKeys : undefined,
    wildcard: out.resultType === 'wildcard' || undefined
  })
}
process.stdout.write(JSON.stringify({ results }) + '\n')
