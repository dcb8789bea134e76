// A node-oidc-provider (v9) token endpoint that judges MEDICODAX client assertions.
//
// One client, SMART Backend Services style: client_credentials, private_key_jwt with
// RS384 (ES384 also enabled), our public JWKS registered. oidc-provider checks aud, exp,
// jti replay, iss, kid, the signature and the algorithm; the assertJwtClientAuthClaimsAndHeader
// hook adds the SMART rules it does not check itself: iat present, exp - iat <= 300 s,
// exp at most 5 minutes ahead, sub == client_id.
//
// Environment: SMART_JWKS_FILE (our JWKS), SMART_CLIENT_ID, SMART_SCOPES (space-separated).
// Binds 127.0.0.1 on a free port and prints one JSON line: {"port", "token_endpoint"}.
// Why a request was refused goes to stderr (the response only says "invalid_client").
import http from 'node:http';
import fs from 'node:fs';
import Provider, { errors } from 'oidc-provider';

const jwks = JSON.parse(fs.readFileSync(process.env.SMART_JWKS_FILE, 'utf8'));
const clientId = process.env.SMART_CLIENT_ID;
const scopes = (process.env.SMART_SCOPES || '').split(' ').filter(Boolean);

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'RS384',
      jwks,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: scopes.join(' '),
    }],
    scopes,
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
    },
    enabledJWA: { clientAuthSigningAlgValues: ['RS384', 'ES384'] },
    async assertJwtClientAuthClaimsAndHeader(ctx, claims, header, client) {
      const now = Math.floor(Date.now() / 1000);
      if (header.typ !== undefined && header.typ !== 'JWT') throw new errors.InvalidClientAuth('typ must be JWT');
      if (typeof claims.iat !== 'number') throw new errors.InvalidClientAuth('iat is required');
      if (claims.exp - claims.iat > 300) throw new errors.InvalidClientAuth('exp - iat exceeds 300 s');
      if (claims.exp - now > 300) throw new errors.InvalidClientAuth('exp is more than 5 minutes ahead');
      if (claims.sub !== client.clientId) throw new errors.InvalidClientAuth('sub must be the client_id');
    },
  });
  provider.on('grant.error', (ctx, err) => {
    const cause = err.cause ? ` (${err.cause.message})` : '';
    process.stderr.write(`${JSON.stringify({ event: 'grant.error', error: err.error, detail: `${err.error_detail || err.message}${cause}` })}\n`);
  });
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ port, token_endpoint: `${issuer}/token` })}\n`);
});
