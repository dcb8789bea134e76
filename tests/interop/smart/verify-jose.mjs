// Verifies MEDICODAX client assertions against our published JWKS with panva `jose`.
//
// stdin: {"jwks": {...}, "audience": "...", "issuer": "...", "tokens": ["...", ...]}
// stdout: one JSON array, per token {"ok": true, "header", "claims"} or {"ok": false, "error"}.
// The key is chosen by kid (and kty) from the local JWKS; algorithms RS384/ES384 only;
// typ must be JWT; iss, aud and exp are checked.
import { createLocalJWKSet, jwtVerify } from 'jose';

let input = '';
for await (const chunk of process.stdin) input += chunk;
const req = JSON.parse(input);
const keys = createLocalJWKSet(req.jwks);
const out = [];
for (const token of req.tokens) {
  try {
    const { payload, protectedHeader } = await jwtVerify(token, keys, {
      algorithms: ['RS384', 'ES384'],
      audience: req.audience,
      issuer: req.issuer,
      typ: 'JWT',
      requiredClaims: ['sub', 'exp', 'iat', 'jti'],
    });
    out.push({ ok: true, header: protectedHeader, claims: payload });
  } catch (e) {
    out.push({ ok: false, error: `${e.code || e.name}: ${e.message}` });
  }
}
process.stdout.write(`${JSON.stringify(out)}\n`);
